"""The root Dockerfile builds what the manifests in deploy/ run, checked
without a container engine (CI has none, and a build downloads hundreds of MB):

- every image of ours the manifests name (``meshserve:...``) is a stage of the
  Dockerfile, the one ``make image`` builds, with pyproject's version;
- every command those containers run starts with the image's entry point and
  names a ``meshserve`` subcommand; every port they open is exposed; they run
  as the image's numeric, non-root user;
- the base image is Python 3.11 slim pinned by tag and digest, and the build
  backend is pinned;
- the build context (.dockerignore) is the packages, pyproject.toml and
  README.md, nothing else;
- the build stage's own RUN lines (those after ``COPY . .``), run in a copy of
  that context with ``PIP_NO_DEPS`` and the project's .venv standing in for
  the pinned dependencies, give an environment whose ``meshserve`` runs each
  subcommand the manifests use and whose every module imports with the
  wheel's runtime dependencies only (tests/deploy/image_imports.py).

What this cannot see: that PyPI still serves the pins, and the image's size;
``make image`` does that.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from kube import controller_settings, runtime_deployment, runtime_selection
from tests.deploy import dockerfile, manifests
from tests.deploy.manifests import NAMESPACE, Obj, Rendered, find, ident, one

REPO = manifests.REPO
DOCKERFILE = dockerfile.parse((REPO / "Dockerfile").read_text())
FINAL = DOCKERFILE.stages[-1]
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
IMAGE_NAME = re.compile(r"^(?:[^/]+/)*(?P<name>[^/:@]+)(?::(?P<tag>[^@]+))?(?:@.+)?$")
DEV_ONLY_MODULES = (
    "meshserve.demo",
    "meshserve.samples",
    "runtime_adapters.mlserver_runtimes.meshserve_onnx",
    "runtime_adapters.mlserver_runtimes.meshserve_transformer",
    "runtime_adapters.mlserver_runtimes.meshserve_explainer",
    "runtime_adapters.mlserver_runtimes.meshserve_sklearn",
    "runtime_adapters.mlserver_runtimes.meshserve_repository",
)
"""Need scikit-learn (a dev extra): `meshserve demo` is not an image feature.
meshserve's MLServer classes (sklearn, ONNX, transformer, SHAP explainer, the model
repository) run inside
an MLServer the node starts itself (its own venv, with MLServer, onnxruntime
and SHAP), never in the image's environment."""


def _pod_specs(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("ClusterServingRuntime", "ServingRuntime"):
        yield spec
    elif "template" in spec:
        yield spec["template"]["spec"]


@pytest.fixture(scope="module")
def deployed(rendered: dict[str, Rendered]) -> dict[str, Rendered]:
    """Every kustomization, and the runtime Deployments the controller makes
    from the quickstart's runtimes: as shipped, and with their mesh node left
    out, so the controller injects its own (as for a runtime written for
    ModelMesh Serving)."""
    objs = rendered["overlays/quickstart"].objects
    env = {**one(objs, "ConfigMap", "meshserve-config")["data"], "POD_NAMESPACE": NAMESPACE}
    opts = controller_settings.settings_from_env(env, pathlib.Path("/nonexistent")).deployment
    made = []
    for doc in find(objs, "ClusterServingRuntime"):
        bare = copy.deepcopy(doc)
        bare["metadata"]["name"] += "-injected"
        bare["spec"]["containers"] = [
            c for c in doc["spec"]["containers"] if c["name"] != "mesh-node"
        ]
        for runtime in (doc, bare):
            made.append(
                runtime_deployment.runtime_deployment(
                    runtime_selection.parse_runtime(runtime), opts
                )
            )
    assert len(made) >= 4
    return {**rendered, "controller-made": Rendered("controller-made", tuple(made), "", 0)}


def ours(rendered: dict[str, Rendered]) -> list[tuple[str, Obj, Obj]]:
    """(where, pod spec, container) of every container whose image is one of
    ours (named meshserve...)."""
    found = []
    for folder, r in sorted(rendered.items()):
        for obj in r.objects:
            for pod in _pod_specs(obj):
                for c in [*pod.get("initContainers", []), *pod["containers"]]:
                    m = IMAGE_NAME.match(c["image"])
                    if m and m["name"].startswith("meshserve"):
                        found.append((f"{folder}: {ident(obj)} {c['name']}", pod, c))
    assert found, "no container runs a meshserve image"
    return found


def argv(container: Obj) -> list[str]:
    """What the container runs: Kubernetes' command/args over the image's
    ENTRYPOINT/CMD."""
    entry = FINAL.last("ENTRYPOINT")
    cmd = FINAL.last("CMD")
    image_entry = (entry.exec_form() if entry else None) or []
    image_cmd = (cmd.exec_form() if cmd else None) or []
    command, args = container.get("command"), container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*image_entry, *(image_cmd if args is None else args)]


def subcommands(rendered: dict[str, Rendered]) -> list[str]:
    return sorted({argv(c)[1] for _, _, c in ours(rendered)})


# --- what the Dockerfile says ---------------------------------------------------------


def test_the_base_image_is_python_3_11_slim_pinned_by_tag_and_digest() -> None:
    requires_python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    names = {s.name for s in DOCKERFILE.stages}
    bases = {s.base for s in DOCKERFILE.stages if s.base not in names}
    assert bases, "no base image"
    for base in bases:
        m = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-bookworm@sha256:[0-9a-f]{64}", base)
        assert m, f"{base}: want python:<exact version>-slim-bookworm@sha256:<digest>"
        assert m[1] in requires_python, f"{base}: not Python {requires_python}"


def test_the_build_backend_is_pinned_and_is_one_pyproject_accepts() -> None:
    build = DOCKERFILE.stage("build")
    pins = re.findall(r"setuptools==([\w.]+)", " ".join(i.text for i in build.all("RUN")))
    assert len(pins) == 1, "pin setuptools once in the build stage"
    (wanted,) = [
        Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")
    ]
    assert pins[0] in wanted.specifier, f"setuptools=={pins[0]} is not {wanted}"


def test_every_meshserve_image_the_manifests_name_is_a_stage_make_image_builds(
    deployed: dict[str, Rendered],
) -> None:
    names = {s.name for s in DOCKERFILE.stages}
    images = {c["image"] for _, _, c in ours(deployed)}
    for image in images:
        m = IMAGE_NAME.match(image)
        assert m and m["name"] in names, f"{image}: no Dockerfile stage named so"
    assert FINAL.name == "meshserve", "the default target must be the image the manifests run"
    makefile = (REPO / "Makefile").read_text()
    default = re.search(r"^IMAGE \?= (\S+)$", makefile, re.M)
    assert default and default[1] in images, "make image must build the image the manifests run"
    assert re.search(r"build --target meshserve --tag \$\(IMAGE\) \.$", makefile, re.M)
    defaults = controller_settings.settings_from_env({}, pathlib.Path("/nonexistent"))
    assert defaults.deployment.node_image == default[1], "the image of injected mesh nodes"


def test_the_image_and_the_production_tag_carry_pyprojects_version(
    rendered: dict[str, Rendered],
) -> None:
    version = PYPROJECT["project"]["version"]
    assert FINAL.labels()["org.opencontainers.image.version"] == version
    images = {c["image"] for _, _, c in ours({"production": rendered["overlays/production"]})}
    assert {str(image).rpartition(":")[2] for image in images} == {version}


def test_every_meshserve_container_runs_the_entry_point_with_a_subcommand(
    deployed: dict[str, Rendered],
) -> None:
    entry = FINAL.last("ENTRYPOINT")
    assert entry is not None and entry.exec_form() == ["meshserve"], (
        "exec form, so `docker run IMAGE node` runs `meshserve node`"
    )
    venv = FINAL.variables()["VENV"]
    assert FINAL.env()["PATH"].startswith(f"{venv}/bin:"), "meshserve must be on PATH"
    copied = [i.text.split() for i in FINAL.all("COPY")]
    assert ["--from=build", "${VENV}", "${VENV}"] in copied, "the environment comes from build"
    for where, _, c in ours(deployed):
        run = argv(c)
        assert run[0] == "meshserve" and len(run) > 1, f"{where}: runs {run}"
        assert not run[1].startswith("-"), f"{where}: no subcommand in {run}"


def test_the_image_runs_as_the_numeric_non_root_user_the_manifests_name(
    deployed: dict[str, Rendered],
) -> None:
    user = FINAL.last("USER")
    assert user is not None, "the image must not run as root"
    m = re.fullmatch(r"(\d+):(\d+)", user.text)
    assert m, "numeric uid:gid, so runAsNonRoot can be checked without /etc/passwd"
    uid, gid = int(m[1]), int(m[2])
    assert uid != 0 and gid != 0
    for where, pod, c in ours(deployed):
        context = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert context.get("runAsUser", uid) == uid, where
        assert context.get("runAsGroup", gid) == gid, where


def test_the_image_exposes_every_port_the_manifests_open(deployed: dict[str, Rendered]) -> None:
    exposed = {int(p.partition("/")[0]) for i in FINAL.all("EXPOSE") for p in i.text.split()}
    opened = {p["containerPort"] for _, _, c in ours(deployed) for p in c.get("ports", [])}
    assert opened == exposed


def test_the_build_context_is_the_packages_pyproject_and_readme() -> None:
    rules = dockerfile.ignore_rules((REPO / ".dockerignore").read_text())
    context = dockerfile.build_context(REPO, rules)
    packages = {
        p.removesuffix("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    tops = {f.partition("/")[0] for f in context}
    assert tops == {"pyproject.toml", PYPROJECT["project"]["readme"], *packages}
    left_out = {".git", ".venv", ".runtimes", ".data", "node_modules", "tests", "__pycache__"}
    assert not [f for f in context if left_out & set(f.split("/"))]
    sources = {
        p.relative_to(REPO).as_posix()
        for package in packages
        for p in (REPO / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sources <= set(context)


# --- the environment the build stage makes --------------------------------------------


def _build_stage_runs() -> tuple[dockerfile.Stage, list[dockerfile.Instruction]]:
    """The stage the image copies its environment from, and its RUN lines
    after ``COPY . .`` (the ones that read this checkout)."""
    build = DOCKERFILE.stage("build")
    copy_all = [i for i in build.instructions if i.keyword == "COPY" and i.text == ". ."]
    assert len(copy_all) == 1, "the build stage copies the context once, with COPY . ."
    after = build.instructions[build.instructions.index(copy_all[0]) :]
    return build, [i for i in after if i.keyword == "RUN"]


def _needs_setuptools_here() -> None:
    """The RUN lines build the wheel with the running pip and setuptools, as
    the image does with its pinned ones (no isolated build env: no download)."""
    (wanted,) = [
        Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")
    ]
    try:
        have = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        have = "none"
    if have not in wanted.specifier:
        pytest.fail(f"building the wheel needs {wanted} in {sys.prefix} (have {have})")


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The build stage's RUN lines, run in a copy of the build context with
    the environment at a temporary path, offline and without dependencies;
    the project's .venv then stands in for the pinned dependencies."""
    _needs_setuptools_here()
    root = tmp_path_factory.mktemp("image")
    context, venv = root / "src", root / "venv"
    rules = dockerfile.ignore_rules((REPO / ".dockerignore").read_text())
    for f in dockerfile.build_context(REPO, rules):
        (context / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, context / f)
    build, runs = _build_stage_runs()
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for run in runs:
        env = {
            **base_env,
            **build.variables(until=run),
            "VENV": str(venv),
            "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]),
            "PIP_NO_DEPS": "1",
            "PIP_NO_INDEX": "1",
        }
        out = subprocess.run(
            ["/bin/sh", "-c", run.text],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert out.returncode == 0, f"RUN {run.text}\n{out.stdout}\n{out.stderr}"
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "project-venv-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


def _run_in(venv: pathlib.Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env["PATH"]])
    return subprocess.run(
        command,
        cwd=venv,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_environment_runs_every_command_the_manifests_run(
    image_venv: pathlib.Path, deployed: dict[str, Rendered]
) -> None:
    script = image_venv / "bin" / "meshserve"
    assert script.read_text().splitlines()[0] == f"#!{image_venv}/bin/python", (
        "the console script runs the environment's own interpreter"
    )
    cmd = FINAL.last("CMD")
    assert cmd is not None
    default = _run_in(image_venv, "meshserve", *(cmd.exec_form() or []))
    assert default.returncode == 0, default.stderr
    for sub in subcommands(deployed):
        out = _run_in(image_venv, "meshserve", sub, "--help")
        assert out.returncode == 0, f"meshserve {sub} --help:\n{out.stderr}"
        assert out.stdout.startswith(f"usage: meshserve {sub}"), out.stdout


def test_every_module_imports_with_only_the_wheels_runtime_dependencies(
    image_venv: pathlib.Path,
) -> None:
    checker = pathlib.Path(__file__).with_name("image_imports.py")
    python = str(image_venv / "bin" / "python")
    out = _run_in(image_venv, python, "-P", str(checker), *DEV_ONLY_MODULES)
    assert out.returncode == 0, out.stdout + out.stderr
