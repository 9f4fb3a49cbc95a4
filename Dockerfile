# The one meshserve image the manifests in deploy/ run (`meshserve:latest`):
# the mesh node (`meshserve node`, in every runtime pod), the controller
# (`meshserve controller`) and the rest of the CLI, all behind the `meshserve`
# entry point. The runtimes themselves are NOT in it: the runtime pods run the
# unmodified upstream images next to the node (seldonio/mlserver,
# nvcr.io/nvidia/tritonserver; see deploy/runtimes), so this image carries no
# MLServer, Triton, etcd or scikit-learn, and `meshserve up` / `demo` do not
# work inside it.
#
#   make image                        # docker or podman, IMAGE ?= meshserve:latest
#   docker run --rm meshserve:latest node --help
#
# Two stages: `build` makes a wheel of this checkout and installs it, with the
# dependencies pinned in pyproject.toml, into a virtual environment without
# pip; `meshserve` (the target the manifests run) is the same base with only
# that environment copied in, run as the non-root user the manifests name
# (uid/gid 65532). tests/deploy/test_image.py checks this file against the
# manifests and runs the build stage's install commands (after `COPY . .`)
# against the project's .venv.

# Python 3.11 (pyproject's requires-python) on Debian 12, pinned by tag and by
# the digest of its multi-architecture index.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
# Where the environment lives, in both stages (console scripts and bytecode
# record this path).
ARG VENV=/opt/meshserve

FROM ${PYTHON_IMAGE} AS build
ARG VENV
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# The build backend, pinned (pyproject.toml's [build-system] only says
# setuptools>=77); the wheel is built with it, without an isolated build env.
RUN python -m pip install setuptools==84.2.1
WORKDIR /src
# The build context is what .dockerignore lets through: pyproject.toml,
# README.md and the packages.
COPY . .
# The wheel of this checkout, then the environment: the wheel and its pinned
# dependencies from PyPI, installed by the base image's pip (the environment
# gets none).
RUN python -m venv --without-pip "$VENV" \
 && python -m pip wheel --no-deps --no-build-isolation --wheel-dir dist . \
 && python -m pip --python "$VENV/bin/python" install dist/meshserve-*.whl

FROM ${PYTHON_IMAGE} AS meshserve
ARG VENV
LABEL org.opencontainers.image.title="meshserve" \
      org.opencontainers.image.description="meshserve node, controller and CLI" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# The uid/gid the manifests' securityContext names (runAsUser 65532); no
# lastlog entry (--no-log-init keeps a high uid from growing the image).
RUN groupadd --gid 65532 meshserve \
 && useradd --uid 65532 --gid 65532 --no-log-init --create-home \
      --home-dir /home/meshserve --shell /usr/sbin/nologin meshserve
COPY --from=build ${VENV} ${VENV}
# Bytecode was compiled at install; nothing is written at run time, so the
# controller runs with a read-only root filesystem.
ENV PATH="${VENV}/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /home/meshserve
# The mesh node's ports (deploy/base/config.yaml): 8033 V2 gRPC and the
# ModelMesh management API, 8008 V2 REST, 2112 Prometheus, 8089 /live /ready.
# The controller listens on none.
EXPOSE 8033 8008 2112 8089
ENTRYPOINT ["meshserve"]
CMD ["--help"]
