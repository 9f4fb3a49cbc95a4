"""MESHSERVE_DISK_CACHE: a size, a share of free space, or off."""

from __future__ import annotations

import pytest

from mesh.core import disk_cache_settings, errors

GiB = 2**30


def read(value: str | None) -> disk_cache_settings.DiskCacheSettings:
    env = {} if value is None else {"MESHSERVE_DISK_CACHE": value}
    return disk_cache_settings.DiskCacheSettings.from_env(env)


def test_sizes_read_like_every_other_size_setting() -> None:
    assert read("2Gi").size_bytes == 2 * GiB
    assert read("500M").size_bytes == 500_000_000
    assert read("0").size_bytes == 0


def test_unset_is_a_quarter_of_the_free_space_and_a_percentage_another_share() -> None:
    assert disk_cache_settings.budget_bytes(read(None), 100 * GiB) == 25 * GiB
    assert disk_cache_settings.budget_bytes(read("10%"), 100 * GiB) == 10 * GiB
    assert disk_cache_settings.budget_bytes(read("1Gi"), 100 * GiB) == GiB


@pytest.mark.parametrize("bad", ["lots", "150%", "x%", "-1"])
def test_a_malformed_value_is_refused_with_the_variable_named(bad: str) -> None:
    with pytest.raises(errors.ConfigError, match="MESHSERVE_DISK_CACHE"):
        read(bad)
