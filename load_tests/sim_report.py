"""The report of the scenario :mod:`load_tests.simulate`: its table, notes
and plots, from the figures alone.

Why it exists: the report is where the figures are read (which steps
failed, where placement herded loads, how etcd traffic and routing time grow
with nodes and models), and that reading deserves tests of its own, from
made-up figures, without an etcd or a simulated node. Everything here is
pure: it takes the figures dict :func:`load_tests.simulate.measure_async`
returns and nothing else. The notes are :mod:`load_tests.sim_notes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from load_tests import report
from load_tests.sim_notes import SHOWN_ACTIONS, Step, action_p50, notes, steps_by

__all__ = ["notes", "plots", "route_series", "table"]

STEP_COLUMNS = (
    "nodes × models",
    "ok/sent",
    "loads",
    "evict",
    "models/node (sd)",
    "peak copies",
    "route p50/p99 µs",
    "request p50/p99 ms",
    "etcd req/s",
    "etcd req/request",
    "idle req/s/node",
    "watch ev/s",
    "etcd db MiB",
)
"""The table's columns, one row per step (:func:`step_row`)."""


def config_lines(f: dict[str, Any]) -> list[str]:
    """The table's heading: what was simulated, with what settings."""
    cfg = f["config"]
    return [
        f"Simulated mesh nodes in one process (real placement, table, cache manager, "
        f"dispatcher, membership, leader, scaler; synthetic runtime), one real etcd "
        f"({f['machine']['cpus']} CPUs)",
        f"each step: {cfg['rate_per_s']:g} req/s for {cfg['duration_s']:g} s, Zipf α "
        f"{cfg['zipf_alpha']:g}, node room {cfg['node_capacity_models']} mean-size models "
        f"({f['node_capacity_bytes'] / 2**30:.1f} GiB), max {cfg['max_copies']} copies, "
        f"load {cfg['load_ms']:g} ms; etcd clients: "
        + ("one per node" if not cfg["etcd_clients"] else f"{cfg['etcd_clients']} shared"),
        "",
    ]


def step_row(s: Mapping[str, Any]) -> list[str]:
    """One step's cells under :data:`STEP_COLUMNS`."""
    r, p, e = s["requests"], s["placement"], s["etcd"]
    mpn = p["models_per_node"]
    return [
        f"{s['nodes']} × {s['models']:,}",
        f"{r['ok']}/{r['sent']}",
        f"{p['loads']}",
        f"{p['evictions']}",
        f"{mpn['min']:.0f}–{mpn['max']:.0f} ({mpn['stddev']:.1f})",
        f"{p['peak_copies_max']}",
        f"{s['routing']['us']['p50']:.0f} / {s['routing']['us']['p99']:.0f}",
        f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.0f}",
        f"{e['load']['per_s']:.0f}",
        f"{e['load']['per_request']:.1f}",
        f"{e['idle']['per_node_per_s']:.2f}",
        f"{e['load']['watch_events_per_s']:.0f}",
        f"{e['db_size'] / 2**20:.1f}",
    ]


def step_details(s: Mapping[str, Any]) -> list[str]:
    """One step's four lines under the table: start, etcd traffic under load,
    what etcd saw, and where placement put the copies."""
    e, p, r = s["etcd"], s["placement"], s["requests"]
    kinds = ", ".join(f"{k} {v}" for k, v in e["load"]["by_kind"].items())
    folders = ", ".join(f"{k} {v}" for k, v in e["load"]["writes_by_folder"].items())
    server = e["server_load"]
    return [
        f"{s['nodes']} × {s['models']:,}: start {s['start_s']:.1f} s "
        f"({e['start']['list_keys']:,} keys listed), RSS {s['process_rss_mib']:.0f} MiB, "
        f"send lag p99 {r['send_lag_ms']['p99']:.0f} ms; errors "
        + (", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"),
        f"  under load: {kinds}; writes by folder: {folders}; "
        f"lost CAS {e['load']['txn_failed']}; "
        f"{e['load']['requests'] / max(1, p['loads']):.1f} etcd requests per load",
        f"  etcd saw: Range {server.get('recv:Range', 0)}, Txn {server.get('recv:Txn', 0)}, "
        f"Put {server.get('recv:Put', 0)}, watch responses {server.get('sent:Watch', 0)}; "
        f"decisions "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["routing"]["actions"].items()))
        + "; route p50 by decision: "
        + ", ".join(f"{k} {v['p50']:.0f} µs" for k, v in s["routing"]["us_by_action"].items()),
        f"  placement: loads per node {p['loads_per_node']['min']}–"
        f"{p['loads_per_node']['max']} on {p['nodes_with_loads']} nodes, copies now "
        + ", ".join(f"{k}×{v}" for k, v in p["copies_now"].items())
        + f", used {p['used_fraction']['min']:.0%}–{p['used_fraction']['max']:.0%} of room; "
        f"etcd vs runtimes: {p['etcd_only_copies']} only in etcd, "
        f"{p['runtime_only_copies']} only in a runtime",
    ]


def table(f: dict[str, Any]) -> str:
    lines = config_lines(f)
    lines.append(report.fmt_table(STEP_COLUMNS, [step_row(s) for s in f["steps"]]))
    lines.append("")
    for s in f["steps"]:
        lines += step_details(s)
    lines.append("leftover processes: " + (", ".join(f["leftover_processes"]) or "none"))
    return "\n".join(lines)


def route_series(steps: Sequence[Mapping[str, Any]], x: str, label: str) -> list[report.Series]:
    """p50 of each shown decision over ``steps`` (x: the steps' ``x`` field);
    ``load there`` dashed."""
    out = []
    for action in SHOWN_ACTIONS:
        points = [(float(s[x]), action_p50(s, action)) for s in steps]
        kept = [(px, py) for px, py in points if py is not None]
        if kept:
            out.append(
                report.Series(
                    f"{action}, {label}",
                    tuple(px for px, _ in kept),
                    tuple(py for _, py in kept if py is not None),
                    dashed=action != SHOWN_ACTIONS[0],
                )
            )
    return out


def traffic_and_route_by_nodes(
    by_models: Mapping[int, Sequence[Step]],
) -> tuple[list[report.Series], list[report.Series]]:
    """Per count of models, over nodes: etcd requests/s and watch events/s
    (dashed), and the routing p50 of each shown decision."""
    etcd_series: list[report.Series] = []
    route_nodes: list[report.Series] = []
    for models, group in sorted(by_models.items()):
        g = sorted(group, key=lambda s: s["nodes"])
        xs = tuple(float(s["nodes"]) for s in g)
        etcd_series.append(
            report.Series(
                f"etcd requests/s, {models:,} models",
                xs,
                tuple(float(s["etcd"]["load"]["per_s"]) for s in g),
            )
        )
        etcd_series.append(
            report.Series(
                f"watch events/s, {models:,} models",
                xs,
                tuple(float(s["etcd"]["load"]["watch_events_per_s"]) for s in g),
                dashed=True,
            )
        )
        route_nodes += route_series(g, "nodes", f"{models:,} models")
    return etcd_series, route_nodes


def route_by_models(by_nodes: Mapping[int, Sequence[Step]]) -> list[report.Series]:
    """Per count of nodes, over models: the routing p50 of each shown decision."""
    route_models: list[report.Series] = []
    for nodes, group in sorted(by_nodes.items()):
        route_models += route_series(
            sorted(group, key=lambda s: s["models"]), "models", f"{nodes} nodes"
        )
    return route_models


def spread_series(steps: Sequence[Step]) -> list[report.Series]:
    """Per step, the models held by each node, busiest first."""
    out = []
    for s in steps:
        counts = s["placement"]["models_per_node_sorted"]
        n = len(counts)
        out.append(
            report.Series(
                f"{s['nodes']} nodes × {s['models']:,} models",
                tuple((i + 0.5) / n for i in range(n)),
                tuple(float(c) for c in counts),
            )
        )
    return out


def plots(f: dict[str, Any]) -> tuple[report.Plot, ...]:
    steps = f["steps"]
    etcd_series, route_nodes = traffic_and_route_by_nodes(steps_by(steps, "models"))
    route_models = route_by_models(steps_by(steps, "nodes"))
    return (
        report.Plot(
            "simulate_etcd_traffic.png",
            "etcd traffic under load vs nodes",
            "nodes",
            "per second",
            tuple(etcd_series),
            xlog=True,
            ylog=True,
        ),
        report.Plot(
            "simulate_models_per_node.png",
            "Models held per node at the end of each step (sorted)",
            "share of nodes (busiest first)",
            "models held",
            tuple(spread_series(steps)),
        ),
        report.Plot(
            "simulate_route_vs_nodes.png",
            "Routing decision time (placement.route, p50) vs nodes",
            "nodes",
            "µs",
            tuple(route_nodes),
            xlog=True,
        ),
        report.Plot(
            "simulate_route_vs_models.png",
            "Routing decision time (placement.route, p50) vs registered models",
            "registered models",
            "µs",
            tuple(route_models),
            xlog=True,
        ),
    )
