"""The report of the scenario :mod:`load_tests.nodes`: its table, notes and
plots, from the figures alone.

Why it exists: the figures of 1, 2 and 3 nodes only mean something once
read together (did more room mean fewer loads and a shorter tail, which
errors came from where, whether the client itself fell behind), and that
reading deserves tests of its own, from made-up figures, without etcd, a
node or MLServer. Everything here is pure: it takes the figures dict
:func:`load_tests.nodes.measure_async` returns and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from load_tests import report

PHASES = ("open", "saturation")


def _errors(e: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items())) or "none"


def _nodes(k: int) -> str:
    return f"{k} node{'' if k == 1 else 's'}"


def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def _phase_table(runs: Sequence[Mapping[str, Any]], phase: str) -> list[str]:
    rows = []
    for r in runs:
        s = r[phase]
        lat, m = s["latency_us"], s["mesh"]
        rows.append(
            [
                str(r["nodes"]),
                f"{s['throughput_per_s']:.1f}",
                str(sum(s["errors"].values())),
                *(_ms(lat[p]) for p in ("p50", "p99", "p99.9", "max")),
                str(m["loads"]),
                str(m["evictions"]),
                f"{m['hit_rate']:.1%}",
                str(m["forwarded"]),
                f"{s['cpu_busy']:.0%}",
            ]
        )
    headers = [
        "nodes",
        "answered/s",
        "errors",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "loads",
        "evictions",
        "hit rate",
        "forwarded",
        "CPU busy",
    ]
    out = [report.fmt_table(headers, rows)]
    failed = [r for r in runs if r[phase]["errors"]]
    if failed:
        out.append(
            "errors by status: "
            + "; ".join(f"{_nodes(r['nodes'])}: {_errors(r[phase]['errors'])}" for r in failed)
        )
    return out


def table(f: dict[str, Any]) -> str:
    c, cfg = f["capacity"], f["config"]
    runs = f["runs"]
    lines = [
        f"{cfg['models']} models (iris copies, each counted as "
        f"{c['model_bytes'] / 2**20:.0f} MiB), {c['models_per_node']} fit in one node: they need "
        f"{c['working_set_over_one_node']:.2f} x one node's room "
        f"({f['machine']['cpus']} CPUs shared by the nodes, their MLServers, etcd and the client)",
        f"Zipf alpha {cfg['zipf_alpha']:g}: the {c['models_per_node']} most asked-for models get "
        f"{c['top_slots_request_share']:.0%} of the requests; requests go round-robin to the "
        f"nodes; eviction: {f.get('eviction') or cfg['eviction'] or '?'}",
        "",
        f"open loop: Poisson at {cfg['rate_per_s']:g}/s for {cfg['open_seconds']:g} s "
        "(latency from the scheduled send)",
        *_phase_table(runs, "open"),
        "",
        f"saturation: closed loop, {cfg['saturation_concurrency']} callers, "
        f"{cfg['saturation_seconds']:g} s (latency from the actual send)",
        *_phase_table(runs, "saturation"),
        "",
        "hit rate: requests served without waiting for a load; forwarded: calls one node "
        "passed to another (or to itself)",
        "at the end: models held per node "
        + "; ".join(
            f"{_nodes(r['nodes'])}: " + " / ".join(str(n["models_here"]) for n in r["per_node"])
            for r in runs
        )
        + "; models with a recorded failed load "
        + ", ".join(f"{r['nodes']}: {r['models_with_failure']}" for r in runs),
        "start (nodes and their MLServers, in parallel) / whole run per node count: "
        + ", ".join(f"{r['nodes']}: {r['startup_s']:.1f} s / {r['took_s']:.0f} s" for r in runs),
        "leftover processes: " + (", ".join(f["leftover_processes"]) or "none"),
    ]
    return "\n".join(lines)


def _series(runs: Sequence[Mapping[str, Any]], key: str, fmt: str, phase: str = "open") -> str:
    """``key`` of the phase's mesh figures over the runs, ``a → b → c``."""
    return " → ".join(format(r[phase]["mesh"][key], fmt) for r in runs)


def room_note(f: dict[str, Any]) -> str:
    """From which node count on all the models fit, if any."""
    cfg, c = f["config"], f["capacity"]
    fits = [r["nodes"] for r in f["runs"] if r["nodes"] * c["models_per_node"] >= cfg["models"]]
    return f"Room: {cfg['models']} models, {c['models_per_node']} per node: " + (
        f"they all fit from {_nodes(fits[0])} on."
        if fits
        else "they fit in none of the node counts measured."
    )


def open_loop_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Whether loads dropped as nodes were added, in the open loop."""
    if len(runs) <= 1:
        return []
    loads = [r["open"]["mesh"]["loads"] for r in runs]
    fewer = loads[-1] < loads[0] or not any(loads)
    ks = " → ".join(str(r["nodes"]) for r in runs)
    p99 = " → ".join(_ms(r["open"]["latency_us"]["p99"]) for r in runs)
    return [
        f"Open loop, {ks} nodes: loads {_series(runs, 'loads', 'd')} "
        f"({_series(runs, 'loads_per_1000', '.0f')} per 1,000 requests), hit rate "
        f"{_series(runs, 'hit_rate', '.1%')}, p99 {p99} ms"
        + (
            ": more nodes, more room, fewer misses."
            if fewer
            else ": loads did NOT drop with more nodes; look at the evictions and at "
            "where the models landed (models held per node) before trusting the run."
        )
    ]


def fell_behind_notes(runs: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[str]:
    """One note per node count whose open loop answered under 95 % of the
    offered rate."""
    out = []
    for r in runs:
        o = r["open"]
        offered = o.get("offered_rate_per_s") or cfg["rate_per_s"]
        if o["throughput_per_s"] < 0.95 * offered:
            out.append(
                f"With {_nodes(r['nodes'])} the open loop answered "
                f"{o['throughput_per_s']:.1f}/s of {offered:.1f}/s offered: requests failed or "
                "the nodes fell behind (queued behind loads, or for CPU)."
            )
    return out


def client_lag_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note if the client itself sent late (open-loop send lag p99 > 5 ms)."""
    lagged = [r for r in runs if r["open"].get("send_lag_us", {}).get("p99", 0) > 5000]
    if not lagged:
        return []
    return [
        "The client itself sent late (open-loop send lag p99 "
        + ", ".join(
            f"{_nodes(r['nodes'])}: {_ms(r['open']['send_lag_us']['p99'])} ms" for r in lagged
        )
        + "): the CPUs were too busy for it too, so part of those tails is the machine, "
        "not the mesh."
    ]


def saturation_notes(runs: Sequence[Mapping[str, Any]], cpus: int) -> list[str]:
    """Saturation throughput of each node count relative to the first, and
    why added nodes add no CPU here."""
    s1 = runs[0]["saturation"]["throughput_per_s"]
    if not (len(runs) > 1 and s1):
        return []
    ratios = ", ".join(
        f"{_nodes(r['nodes'])} x{r['saturation']['throughput_per_s'] / s1:.2f}" for r in runs[1:]
    )
    busy = max(r["saturation"]["cpu_busy"] for r in runs)
    return [
        f"Saturation throughput relative to {_nodes(runs[0]['nodes'])} ({s1:.0f}/s): "
        f"{ratios}; hit rate {_series(runs, 'hit_rate', '.1%', 'saturation')}. Every node, "
        f"MLServer, etcd and the client share {cpus} CPUs (up to "
        f"{busy:.0%} busy, other people's processes included), so added nodes add no CPU "
        "here: what they add is room (fewer requests wait for a load, and loads cost CPU "
        "too), while each extra process and the forwarding hop (about (k-1)/k of the "
        "requests land on a node without the model) take CPU. k machines would add CPU "
        "as well; this is not that figure."
    ]


def not_comparable_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note naming the phases where over 1 % of the requests failed."""
    skewed = [
        (r["nodes"], p, sum(r[p]["errors"].values()) / r[p]["sent"])
        for r in runs
        for p in PHASES
        if r[p]["sent"] and sum(r[p]["errors"].values()) > 0.01 * r[p]["sent"]
    ]
    if not skewed:
        return []
    return [
        "Not comparable: "
        + ", ".join(f"{_nodes(k)} {p} ({share:.0%} failed)" for k, p, share in skewed)
        + ". Throughput counts answered requests only, failures are fast, and a model "
        "that fails fast drops out of the working set, so the rest hit more often."
    ]


def error_causes(timeout_s: float) -> dict[str, str]:
    """What each gRPC status the client saw means, in this scenario."""
    return {
        "FAILED_PRECONDITION": "the model had a recorded failed load and fails fast until "
        "the failure expires (MESHSERVE_FAILURE_EXPIRY, 15 min by default) once as many "
        "nodes as can hold it (at most 3) have failed it; the mesh records a node finding "
        "no evictable room (every model on it loading or in use) as such a failure",
        "RESOURCE_EXHAUSTED": "no evictable room: every model on the node was loading or "
        "serving a request",
        "DEADLINE_EXCEEDED": f"the request waited past its {timeout_s:g} s "
        "deadline (queued behind loads, or for CPU)",
        "UNAVAILABLE": "a runtime or peer could not serve (the runtime lost the model, or "
        "a peer was unreachable)",
    }


def errors_note(runs: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> str:
    """The statuses that failed requests, what each means, and the failed
    loads; or that no request failed."""
    codes = {code for r in runs for p in PHASES for code in r[p]["errors"]}
    if not codes:
        return "No request failed in any measured phase."
    why = error_causes(cfg["timeout_s"])
    failures = sum(r[p]["mesh"]["load_failures"] for r in runs for p in PHASES)
    return (
        "Errors: "
        + "; ".join(f"{code}: {why.get(code, 'see the node logs')}" for code in sorted(codes))
        + f". Failed loads during the measured phases: {failures}; models with a recorded "
        "failure at the end: "
        + ", ".join(f"{_nodes(r['nodes'])} {r['models_with_failure']}" for r in runs)
        + "."
    )


def self_forwarding_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note for a lone node that forwarded calls (to itself)."""
    selfish = [
        r for r in runs if r["nodes"] == 1 and any(r[p]["mesh"]["forwarded"] for p in PHASES)
    ]
    return [
        f"With one node, {sum(r[p]['mesh']['forwarded'] for p in PHASES)} calls were "
        "forwarded: the node called itself. A copy being unloaded is still LOADED in etcd "
        "until the unload ends, and routing (mesh.core.placement.route) then picks this node's "
        "own copy as a peer's: an extra gRPC hop through itself."
        for r in selfish
    ]


def notes(f: dict[str, Any]) -> tuple[str, ...]:
    runs = f["runs"]
    if not runs:
        return ("No node count was measured.",)
    cfg = f["config"]
    out = [room_note(f)]
    out += open_loop_notes(runs)
    out += fell_behind_notes(runs, cfg)
    out += client_lag_notes(runs)
    out += saturation_notes(runs, f["machine"]["cpus"])
    out += not_comparable_notes(runs)
    out.append(errors_note(runs, cfg))
    out += self_forwarding_notes(runs)
    return tuple(out)


NINES = ((0.0, "0"), (0.30103, "50"), (1.0, "90"), (2.0, "99"), (3.0, "99.9"), (4.0, "99.99"))


def _nines(cdf: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xs = tuple(float(v) for v, _ in cdf)
    ys = tuple(-float(np.log10(1.0 - min(frac, 0.9999))) for _, frac in cdf)
    return xs, ys


def plots(f: dict[str, Any]) -> tuple[report.Plot, ...]:
    runs = f["runs"]
    ks = tuple(float(r["nodes"]) for r in runs)
    xticks = tuple((k, f"{k:g}") for k in ks)
    out = [
        report.Plot(
            filename="nodes_cdf_open.png",
            title=f"Latency CDF, Poisson at {f['config']['rate_per_s']:g}/s, Zipf over "
            f"{f['config']['models']} models",
            xlabel="latency, µs (from the scheduled send)",
            ylabel="percentile",
            series=tuple(
                report.Series(f"{k} node{'s' if k != '1' else ''}", *_nines(c))
                for k, c in f["cdf"].items()
                if c
            ),
            xlog=True,
            yticks=NINES,
        ),
        report.Plot(
            filename="nodes_throughput.png",
            title="Requests answered per second",
            xlabel="nodes",
            ylabel="requests / s",
            series=(
                report.Series(
                    "saturation (closed loop)",
                    ks,
                    tuple(float(r["saturation"]["throughput_per_s"]) for r in runs),
                ),
                report.Series(
                    "open loop (offered rate fixed)",
                    ks,
                    tuple(float(r["open"]["throughput_per_s"]) for r in runs),
                ),
            ),
            xticks=xticks,
        ),
        report.Plot(
            filename="nodes_loads.png",
            title="Model loads per 1,000 requests answered",
            xlabel="nodes",
            ylabel="loads / 1,000 requests",
            series=(
                report.Series(
                    "open loop", ks, tuple(float(r["open"]["mesh"]["loads_per_1000"]) for r in runs)
                ),
                report.Series(
                    "saturation",
                    ks,
                    tuple(float(r["saturation"]["mesh"]["loads_per_1000"]) for r in runs),
                ),
            ),
            xticks=xticks,
        ),
    ]
    return tuple(out)
