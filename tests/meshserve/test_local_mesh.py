"""`meshserve up --runtime` plans which runtime each node runs."""

from __future__ import annotations

import pytest

from mesh.core import errors
from meshserve import local_mesh


def test_one_runtime_name_gives_every_node_that_runtime() -> None:
    assert local_mesh.runtime_plan("triton", 3) == ("triton", "triton", "triton")


def test_a_mixed_pool_lists_each_runtime_as_many_times_as_asked() -> None:
    assert local_mesh.runtime_plan("mlserver=2,triton=1", 1) == ("mlserver", "mlserver", "triton")


def test_a_mixed_pool_sets_the_number_of_nodes() -> None:
    assert local_mesh.LocalMeshOptions(runtime="mlserver=2,triton=1").nodes == 3
    with pytest.raises(errors.ConfigError, match="--nodes says 2"):
        local_mesh.LocalMeshOptions(runtime="mlserver=2,triton=1", nodes=2)


@pytest.mark.parametrize("spec", ["torchserve", "mlserver=0", "mlserver=two", "pytorch=1"])
def test_an_unknown_runtime_or_bad_count_is_refused_naming_it(spec: str) -> None:
    with pytest.raises(errors.ConfigError, match="--runtime"):
        local_mesh.runtime_plan(spec, 1)
