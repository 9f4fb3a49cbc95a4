"""The repository class of the MLServer a node starts: a model is found by
reading its own folder's settings (one parse, whatever else the repository
holds), and anything laid out otherwise is still found by MLServer's walk.
Run in MLServer's venv, where the class lives."""

from __future__ import annotations

import json
import pathlib
import textwrap

from runtime_adapters import mlserver
from tests.runtime_adapters import mlserver_venv

COUNTING = textwrap.dedent(
    """
    import meshserve_repository as mr

    parsed = []  # the paths whose settings were parsed
    real = mr.load_model_settings
    def counting(path):
        parsed.append(path)
        return real(path)
    mr.load_model_settings = counting
    """
)

SCRIPT = COUNTING + textwrap.dedent(
    """
    import asyncio, json, sys
    from mlserver.errors import ModelNotFound

    async def find(name):
        parsed.clear()
        try:
            found = await mr.FolderPerModelRepository(sys.argv[1]).find(name)
        except ModelNotFound:
            return {"found": None, "parsed": len(parsed)}
        return {"found": [m.name for m in found], "parsed": len(parsed)}

    names = ["m3", "hand-laid", "nowhere", "../m3"]
    print(json.dumps({n: asyncio.run(find(n)) for n in names}))
    """
)


def write_settings(folder: pathlib.Path, name: str) -> None:
    folder.mkdir(parents=True)
    (folder / "model-settings.json").write_text(
        json.dumps({"name": name, "implementation": "mlserver_sklearn.SKLearnModel"})
    )


def test_a_model_is_found_in_its_own_folder_and_others_by_the_walk(tmp_path: pathlib.Path) -> None:
    for i in range(6):
        write_settings(tmp_path / f"m{i}", f"m{i}")
    write_settings(tmp_path / "folder-of-another-name", "hand-laid")
    found = json.loads(mlserver_venv.run(SCRIPT, str(tmp_path)).splitlines()[-1])
    # The node's layout: one file read, not seven.
    assert found["m3"] == {"found": ["m3"], "parsed": 1}
    # A folder named otherwise: MLServer's walk finds it, as before.
    assert found["hand-laid"]["found"] == ["hand-laid"]
    assert found["nowhere"]["found"] is None
    # A name that is not a folder name never reads outside the repository.
    assert found["../m3"]["found"] is None


REUSE_SCRIPT = COUNTING + textwrap.dedent(
    """
    import asyncio, json, pathlib, sys

    def find():
        return asyncio.run(mr.FolderPerModelRepository(sys.argv[1]).find("m"))[0]

    first = find()
    first.parameters.version = "changed by its user"  # must not reach the next load
    again = find()
    settings = pathlib.Path(sys.argv[1]) / "m" / "model-settings.json"
    settings.write_text(settings.read_text().replace("mlserver_sklearn", "meshserve_sklearn"))
    rewritten = find()
    print(json.dumps({
        "parses": len(parsed),
        "again": [again.implementation_, again.parameters.version, again.parameters.uri],
        "first_uri": first.parameters.uri,
        "rewritten": rewritten.implementation_,
    }))
    """
)


def test_a_reloaded_models_settings_are_parsed_once_until_the_file_changes(
    tmp_path: pathlib.Path,
) -> None:
    write_settings(tmp_path / "m", "m")
    out = json.loads(mlserver_venv.run(REUSE_SCRIPT, str(tmp_path)).splitlines()[-1])
    # Three loads: parsed for the first, reused for the second, parsed
    # again once the file changed.
    assert out["parses"] == 2
    implementation, version, uri = out["again"]
    assert implementation == "mlserver_sklearn.SKLearnModel"
    assert version != "changed by its user"
    assert uri == out["first_uri"] == str(tmp_path / "m")
    assert out["rewritten"] == "meshserve_sklearn.SKLearnModel"


def test_the_node_started_mlserver_uses_the_repository_class() -> None:
    settings = mlserver.server_settings("127.0.0.1", 1, 2, 3, 16 << 20)
    module, _, cls = str(settings["model_repository_implementation"]).rpartition(".")
    source = mlserver_venv.CLASSES / f"{module}.py"
    assert source.is_file() and f"class {cls}(" in source.read_text()
