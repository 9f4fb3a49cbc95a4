"""Where a store's objects land in the model folder: a prefix's contents
relative to it, a single object under its own name, nothing outside."""

from __future__ import annotations

import pytest

from puller import store


def obj(key: str, size: int = 1, **kw: str) -> store.RemoteObject:
    return store.RemoteObject(key, size, **kw)


def layout(path: str, keys: list[str]) -> list[str]:
    return [t.relative for t in store.plan(path, [obj(k) for k in keys])]


def test_a_prefix_takes_what_is_under_it_relative_to_it() -> None:
    keys = ["models/iris/model.joblib", "models/iris/sub/x.json", "models/iris2/model.joblib"]
    assert layout("models/iris", keys) == ["model.joblib", "sub/x.json"]
    assert layout("models/iris/", keys) == ["model.joblib", "sub/x.json"]


def test_a_single_object_lands_under_its_own_name() -> None:
    assert layout("models/iris.joblib", ["models/iris.joblib", "models/iris.joblib.bak"]) == [
        "iris.joblib"
    ]


def test_an_http_object_uses_the_name_the_store_gives() -> None:
    targets = store.plan("", [obj("", -1, name="model.tar.gz")])
    assert [t.relative for t in targets] == ["model.tar.gz"]


def test_the_whole_bucket_when_the_path_is_empty() -> None:
    assert layout("", ["a/b", "c"]) == ["a/b", "c"]


def test_folder_markers_are_skipped() -> None:
    assert layout("m", ["m/", "m/sub/", "m/sub/f"]) == ["sub/f"]


def test_nothing_there_is_not_found() -> None:
    with pytest.raises(store.NotFound):
        layout("models/iris", ["models/iris2/model.joblib"])


@pytest.mark.parametrize("key", ["m/../../etc/passwd", "m//abs", "m/a\\..\\..\\x"])
def test_keys_that_would_land_outside_the_folder_are_refused(key: str) -> None:
    with pytest.raises(store.UnsafeArchive):
        layout("m", ["m/ok", key])


def test_a_key_that_is_both_file_and_folder_is_refused() -> None:
    with pytest.raises(store.UnsafeArchive, match="both a file and a folder"):
        layout("m", ["m/a", "m/a/b"])


def test_sizes_and_checksums_must_match_what_the_store_announced() -> None:
    store.check_fetched(obj("k", 3, md5="abc"), 3, "ABC")
    store.check_fetched(obj("k", -1), 7, "")
    with pytest.raises(store.Corrupt, match="broke off: received 2 of the 3 bytes"):
        store.check_fetched(obj("k", 3), 2, "")
    with pytest.raises(store.Corrupt, match="received 4 bytes, the store announced 3"):
        store.check_fetched(obj("k", 3), 4, "")
    with pytest.raises(store.Corrupt, match="MD5"):
        store.check_fetched(obj("k", 3, md5="abc"), 3, "def")


def test_urls_are_shown_without_credentials() -> None:
    shown = store.public_url("https://user:pw@host:8443/m/a.zip?sig=SECRET#x")
    assert shown == "https://host:8443/m/a.zip"
    assert store.public_url("models/iris") == "models/iris"
