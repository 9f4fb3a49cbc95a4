"""The configuration of the scenario :mod:`load_tests.simulate`, and what
follows from it alone: the models' ids and synthetic sizes, each node's
capacity and settings, and the ``--steps`` syntax.

Why it exists: every part of the simulation (a step's set-up and phases in
:mod:`load_tests.sim_step`, the agents' tests, the scenario's entry point)
reads the same configuration; holding it below all of them keeps each step
reproducible from the configuration and its seed, and lets the parts be
tested without etcd.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

from load_tests import sim_runtime
from mesh.core import settings

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Config:
    steps: tuple[tuple[int, int], ...] = (
        (10, 1000),
        (30, 1000),
        (100, 1000),
        (10, 10_000),
        (30, 10_000),
        (100, 10_000),
    )
    """(nodes, registered models) of each step; each step starts from scratch."""
    rate_per_s: float = 100.0
    """Requests per second entering the mesh (open loop, Poisson)."""
    duration_s: float = 20.0
    """Length of the request phase of each step."""
    idle_s: float = 3.0
    """Background traffic window before the requests (nodes up, no requests)."""
    zipf_alpha: float = 1.0
    """Popularity skew over the models (ranks shuffled over the model ids)."""
    node_capacity_models: int = 24
    """Room of each node, in models of the mean synthetic size."""
    size_median_mib: float = 64.0
    """Median synthetic model size (log-normal)."""
    size_sigma: float = 1.0
    """σ of the sizes in log space; sizes are clipped to 1 MiB .. 8 × median."""
    load_ms: float = 5.0
    """How long a synthetic load takes."""
    max_copies: int = 3
    """Each model's ``max_copies``: the most copies the scaler may give it."""
    scale_up_rpm: int = 30
    """``MESHSERVE_SCALE_UP_RPM`` of every node: far below the product's 600
    because a step lasts seconds, not the minute the rate is counted over
    (30 requests to one copy within a step stands for a hot model)."""
    scale_check_s: float = 2.0
    """``MESHSERVE_SCALE_INTERVAL`` of every node."""
    etcd_clients: int = 0
    """0: one etcd client (connection) per node, as in a real mesh; k: the
    nodes share k clients, round-robin (each still counted on its own)."""
    start_concurrency: int = 10
    """Nodes starting at once. Each start lists every record; a hundred at
    once keep the one event loop so busy that the first nodes' lease
    keep-alives time out (an artefact of one process, not of the mesh)."""
    register_concurrency: int = 64
    """etcd writes in flight while the models are registered."""
    timeout_s: float = 30.0
    """Deadline of each request."""
    seed: int = 7


QUICK = Config(
    steps=((10, 1000), (30, 1000), (100, 1000), (30, 10_000)),
    duration_s=8.0,
    idle_s=5.0,
)
SMOKE = Config(steps=((10, 200),), rate_per_s=50.0, duration_s=4.0, idle_s=1.0, scale_up_rpm=10)


def model_ids(n: int) -> list[str]:
    return [f"sim-model-{i:06d}" for i in range(n)]


def model_sizes(cfg: Config, n: int) -> list[int]:
    """Log-normal sizes (bytes), clipped to 1 MiB .. 8 × the median."""
    rng = np.random.default_rng(cfg.seed)
    median = cfg.size_median_mib * MiB
    raw = rng.lognormal(math.log(median), cfg.size_sigma, size=n)
    return [int(x) for x in np.clip(raw, MiB, 8 * median)]


def node_capacity(cfg: Config) -> int:
    """Each node's capacity: ``node_capacity_models`` models of the mean size
    of the (unclipped) log-normal."""
    mean = cfg.size_median_mib * MiB * math.exp(cfg.size_sigma**2 / 2)
    return int(cfg.node_capacity_models * mean)


def node_settings(
    cfg: Config, endpoint: str, prefix: str, node_id: str, data: pathlib.Path
) -> settings.Settings:
    return settings.Settings(
        kv=settings.KVSettings(endpoints=(endpoint,), prefix=prefix),
        cache=settings.CacheSettings(capacity_bytes=node_capacity(cfg)),
        node=settings.NodeSettings(instance_id=node_id, data_dir=data / node_id),
        runtime=settings.RuntimeSettings(kind=sim_runtime.SyntheticRuntime.name),
        routing=settings.RoutingSettings(default_deadline_seconds=cfg.timeout_s),
        scaling=settings.ScalingSettings(
            scale_up_rpm=cfg.scale_up_rpm, check_interval_seconds=cfg.scale_check_s
        ),
    )


def parse_steps(text: str) -> tuple[tuple[int, int], ...]:
    """``10x1000,30x1000`` → ((10, 1000), (30, 1000))."""
    out = []
    for part in text.split(","):
        nodes, sep, models = part.strip().partition("x")
        if not sep or not nodes.isdigit() or not models.isdigit():
            raise ValueError(f"{part!r} is not NODESxMODELS")
        if int(nodes) < 1 or int(models) < 1:
            raise ValueError(f"{part!r}: nodes and models must be 1 or more")
        out.append((int(nodes), int(models)))
    return tuple(out)
