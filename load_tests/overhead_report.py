"""The report of the scenario :mod:`load_tests.overhead`: its table, notes
and plots, from the figures alone.

Why it exists: the overhead figures are read against targets (the mesh's
added p50 and throughput next to a bare Python hop's), and that reading,
with the reasons given when a target is missed, is pure work on the figures
dict that deserves tests of its own, from made-up numbers, without etcd, a
node, MLServer or the proxy. The scenario imports this module, never the
other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from load_tests import report

PATHS = ("direct", "bare", "mesh")
"""The three ways to the same loaded model: MLServer's own port, the bare
proxy, the mesh node."""


def _phase_table(f: dict[str, Any], key: str, title: str) -> list[str]:
    """One phase's latencies per path, and what each hop adds (µs)."""
    s = f[key]
    rows = [
        [
            p,
            *(f"{s['latency_us'][p][k]:.0f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
            str(sum(s["errors"][p].values())),
        ]
        for p in PATHS
    ]
    for label, k in (
        ("bare - direct", "bare_over_direct"),
        ("mesh - direct", "mesh_over_direct"),
        ("mesh - bare", "mesh_over_bare"),
    ):
        a = s["added_us"][k]
        rows.append([label, f"{a['p50']:+d}", f"{a['p90']:+d}", f"{a['p99']:+d}", "", "", ""])
    return [
        title + " (µs)",
        report.fmt_table(["path", "p50", "p90", "p99", "p99.9", "max", "errors"], rows),
        "",
    ]


def _throughput_lines(f: dict[str, Any]) -> list[str]:
    sat = f["saturation"]
    t, r = sat["throughput_per_s"], sat["throughput_ratio"]
    rate = f["half_rate"]["rate_per_s"]
    return [
        "the half-rate load is "
        + ", ".join(f"{rate / t[p]:.0%} of {p}'s saturation" for p in PATHS if t[p]),
        f"throughput at saturation: direct {t['direct']:.0f}/s, bare {t['bare']:.0f}/s "
        f"(x{r['bare_vs_direct']:.2f}), mesh {t['mesh']:.0f}/s (x{r['mesh_vs_direct']:.2f} of "
        f"direct, x{r['mesh_vs_bare']:.2f} of bare)",
        "",
    ]


def _cpu_table(f: dict[str, Any]) -> str:
    rows = []
    for phase in ("sequential", "half_rate", "saturation"):
        c = f["cpu_us_per_request"][phase]
        rows.append(
            [
                phase,
                f"{c['bare_proxy']:.0f}",
                f"{c['mesh_node']:.0f}",
                f"{c['mlserver']['direct']:.0f}",
                f"{c['client']['direct']:.0f}/{c['client']['bare']:.0f}/{c['client']['mesh']:.0f}",
                f"{c['idle_ms_per_s']['bare_proxy']:.1f}/{c['idle_ms_per_s']['mesh_node']:.1f}",
            ]
        )
    return report.fmt_table(
        [
            "phase",
            "bare proxy",
            "mesh node",
            "MLServer",
            "client d/b/m",
            "idle ms/s bare/mesh",
        ],
        rows,
    )


def table(f: dict[str, Any]) -> str:
    m = f["model"]
    lines = [
        f"the same model and MLServer: direct, through a bare grpc.aio proxy, through the mesh "
        f"({f['machine']['cpus']} CPUs; {m['name']}, batch {m['batch'][0]}x{m['batch'][1]} FP64)",
        f"start (etcd + node + its MLServer, to ready): {f['startup_s']:.1f} s; "
        f"first call through the mesh (load): {f['first_call_ms']:.0f} ms",
        "",
    ]
    for key, title in (
        ("sequential", f"concurrency 1: {f['sequential']['calls_per_path']} calls per path"),
        (
            "half_rate",
            f"open loop, Poisson at half the direct saturation rate "
            f"({f['half_rate']['rate_per_s']:.0f}/s), {f['half_rate']['seconds_per_path']:g} s "
            "per path",
        ),
        (
            "saturation",
            f"saturation: closed loop, {f['saturation']['concurrency']} callers, "
            f"{f['saturation']['seconds_per_path']:g} s per path",
        ),
    ):
        lines += _phase_table(f, key, title)
    lines += _throughput_lines(f)
    lines.append("CPU-µs per request (process CPU time / requests answered)")
    lines.append(_cpu_table(f))
    lines.append("leftover processes: " + (", ".join(f["leftover_processes"]) or "none"))
    return "\n".join(lines)


def notes(f: dict[str, Any]) -> tuple[str, ...]:
    t = f["targets"]
    a = t["mesh_added_p50_le_1.1x_bare"]
    out = [
        (
            f"Target mesh added p50 ≤ 1.1 × bare hop's: {'met' if a['met'] else 'MISSED'} "
            f"(mesh +{a['mesh_added_p50_us']} µs, bare +{a['bare_added_p50_us']} µs, "
            f"ratio {a['ratio']:.2f}"
            + ("" if a["met"] else f", {a['ratio'] - 1.1:.2f} over the target")
            + ")."
        ),
    ]
    b = t["mesh_throughput_ge_0.95x_bare"]
    out.append(
        f"Target mesh throughput ≥ 0.95 × bare: {'met' if b['met'] else 'MISSED'} "
        f"(x{b['ratio']:.2f})."
    )
    c = t["stretch_mesh_added_p50_le_250us"]
    out.append(
        f"Stretch mesh added p50 ≤ 250 µs: {'met' if c['met'] else 'missed'} "
        f"(+{c['mesh_added_p50_us']} µs)."
    )
    sat = f["saturation"]["throughput_per_s"]
    over = [p for p in PATHS if sat[p] and f["half_rate"]["rate_per_s"] >= 0.9 * sat[p]]
    if over:
        out.append(
            f"At half the direct saturation rate, {' and '.join(over)} ran at 90 % or more of "
            "its own saturation throughput (see the line above the throughput): those "
            "half-rate latencies are mostly queueing."
        )
    cpu = f["cpu_us_per_request"]["saturation"]
    if not (a["met"] and b["met"]):
        out.append(
            f"Why: at saturation the mesh node spends {cpu['mesh_node']:.0f} CPU-µs per request "
            f"against the bare proxy's {cpu['bare_proxy']:.0f}; on 2 cores that CPU is taken "
            "from the client and MLServer, so it shows as latency and throughput. The "
            "difference is the mesh's own Python work per call (header and name parsing, "
            "table look-ups, the cache manager's bookkeeping, metrics); profile the node "
            "with py-spy under this load to see which."
        )
    return tuple(out)


def _percentile_axis(cdf: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CDF points on a 'nines' axis: y = -log10(1 - fraction)."""
    xs, ys = [], []
    for value, frac in cdf:
        xs.append(value)
        ys.append(-float(np.log10(1.0 - min(frac, 0.9999))))
    return tuple(xs), tuple(ys)


NINES = ((0.0, "0"), (0.30103, "50"), (1.0, "90"), (2.0, "99"), (3.0, "99.9"), (4.0, "99.99"))


def plots(f: dict[str, Any]) -> tuple[report.Plot, ...]:
    out = []
    for key, title in (
        ("sequential", "Latency CDF, concurrency 1"),
        ("half_rate", f"Latency CDF, Poisson at {f['half_rate']['rate_per_s']:.0f}/s"),
    ):
        series = []
        for p in PATHS:
            xs, ys = _percentile_axis(f["cdf"][key][p])
            series.append(report.Series(p, xs, ys))
        out.append(
            report.Plot(
                filename=f"overhead_cdf_{key}.png",
                title=title,
                xlabel="latency, µs",
                ylabel="percentile",
                series=tuple(series),
                xlog=True,
                yticks=NINES,
            )
        )
    return tuple(out)
