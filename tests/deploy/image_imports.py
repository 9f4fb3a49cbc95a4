"""Run by tests/deploy/test_image.py inside the environment the Dockerfile's
build stage made (``python -P image_imports.py [SKIPPED_MODULE...]``): every
module of the installed meshserve wheel must import.

In that test the wheel's dependencies are not downloaded: the project's .venv
stands in for them, and it also holds the dev extras, which the image does not
install. So this script first works out the distributions the image does get
(the wheel's requirements and theirs, extras and markers evaluated) and
refuses any import whose top-level module only other distributions provide: a
module that needs scikit-learn or pytest fails here as it would in the image.
Modules named on the command line are skipped (the demo, which needs
scikit-learn and is not an image feature). Prints one line per failure and
exits 1 if there is any.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import pathlib
import re
import sys
import traceback
import types
from collections.abc import Sequence
from importlib import metadata

from packaging.requirements import Requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions(root: str) -> set[str]:
    """``root`` and every distribution its requirements pull in, as pip would
    install them for a plain ``pip install root``."""
    wanted: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        for line in metadata.distribution(name).requires or []:
            req = Requirement(line)
            active = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in (*extras, "")
            )
            if active:
                wanted.append((_canonical(req.name), frozenset(req.extras)))
    return names


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses top-level modules of distributions the image does not install."""

    def __init__(self, blocked: dict[str, list[str]]) -> None:
        self.blocked = blocked

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(
                f"{fullname} is only in {', '.join(self.blocked[top])}, "
                "which the image does not install",
                name=fullname,
            )
        return None


def wheel_modules(dist: metadata.Distribution) -> list[str]:
    """Module names of the wheel's .py files."""
    out = []
    for f in dist.files or []:
        if f.suffix == ".py" and not str(f).startswith(("..", "/")):
            parts = list(pathlib.PurePosixPath(str(f)).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts[-1] != "__main__":
                out.append(".".join(parts))
    return sorted(out)


def main(skipped: Sequence[str]) -> int:
    dist = metadata.distribution("meshserve")
    installed = pathlib.Path(str(dist.locate_file(""))).resolve()
    assert installed.is_relative_to(pathlib.Path(sys.prefix).resolve()), installed
    allowed = runtime_distributions("meshserve")
    blocked = {
        top: sorted(dists)
        for top, dists in metadata.packages_distributions().items()
        if not {_canonical(d) for d in dists} & allowed
    }
    for name in [m for m in sys.modules if m.partition(".")[0] in blocked]:
        del sys.modules[name]  # this script's own helpers (packaging) do not count
    sys.meta_path.insert(0, _Refuse(blocked))
    failures = 0
    for module in wheel_modules(dist):
        if module in skipped:
            continue
        try:
            loaded = importlib.import_module(module)
        except Exception:  # every failure is reported, none stops the others
            failures += 1
            print(f"{module}: {traceback.format_exc(limit=0).strip()}")
            continue
        where = pathlib.Path(str(loaded.__file__)).resolve()
        if not where.is_relative_to(installed):
            failures += 1
            print(f"{module}: imported from {where}, not from the installed wheel")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
