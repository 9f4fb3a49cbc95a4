"""The report of the scenario :mod:`load_tests.simulate`: its table, notes
and plots, from the figures alone.

Why it exists: the report is where the figures are read (which steps
failed, where placement herded loads, how etcd traffic and routing time grow
with nodes and models), and that reading deserves tests of its own, from
made-up figures, without an etcd or a simulated node. Everything here is
pure: it takes the figures dict :func:`load_tests.simulate.measure_async`
returns and nothing else.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from load_tests import report


def table(f: dict[str, Any]) -> str:
    cfg = f["config"]
    lines = [
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
    rows = []
    for s in f["steps"]:
        r, p, e = s["requests"], s["placement"], s["etcd"]
        mpn = p["models_per_node"]
        rows.append(
            [
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
        )
    lines.append(
        report.fmt_table(
            [
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
            ],
            rows,
        )
    )
    lines.append("")
    for s in f["steps"]:
        e, p, r = s["etcd"], s["placement"], s["requests"]
        kinds = ", ".join(f"{k} {v}" for k, v in e["load"]["by_kind"].items())
        folders = ", ".join(f"{k} {v}" for k, v in e["load"]["writes_by_folder"].items())
        server = e["server_load"]
        lines += [
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
    lines.append("leftover processes: " + (", ".join(f["leftover_processes"]) or "none"))
    return "\n".join(lines)


def capacity_errors(step: Mapping[str, Any]) -> int:
    """Requests of a step that failed for lack of room (on the node that
    took them, or on the peer it chose)."""
    errs = step["requests"]["errors"]
    return int(errs.get("InsufficientCapacity", 0)) + int(errs.get("status RESOURCE_EXHAUSTED", 0))


SHOWN_ACTIONS = ("forward", "load there")
"""Decisions whose time is compared between steps, each on its own: the mix
of decisions changes with nodes and models (more misses mean more of the
dearer ``load there``), so the overall p50 alone would mislead."""


def action_p50(step: Mapping[str, Any], action: str) -> float | None:
    """The step's p50 µs of ``route`` calls that decided ``action``, if any."""
    v = step["routing"].get("us_by_action", {}).get(action)
    return None if v is None else float(v["p50"])


def route_growth(lo: Mapping[str, Any], hi: Mapping[str, Any]) -> str:
    """``forward x1.8, load there x2.0`` (each decision's p50, ``hi`` over
    ``lo``), or the overall p50's ratio when neither decision is in both."""
    parts = []
    for action in SHOWN_ACTIONS:
        a, b = action_p50(hi, action), action_p50(lo, action)
        if a is not None and b:
            parts.append(f"{action} x{_ratio(a, b)}")
    if not parts:
        return f"x{_ratio(hi['routing']['us']['p50'], lo['routing']['us']['p50'])}"
    return ", ".join(parts)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def notes(f: dict[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    steps = f["steps"]
    failed = [s for s in steps if s["requests"]["ok"] < s["requests"]["sent"]]
    if failed:
        out.append(
            "Not every request was routed: "
            + "; ".join(
                f"{s['nodes']} × {s['models']:,}: {s['requests']['sent'] - s['requests']['ok']} "
                f"failed ({', '.join(f'{k} {v}' for k, v in s['requests']['errors'].items())})"
                for s in failed
            )
            + "."
        )
    else:
        out.append("Every request was routed and answered by a runtime holding its model.")
    over = [s for s in steps if s["placement"]["over_max_copies"]]
    if over:
        out.append(
            "A model had more copies at once than its max_copies "
            f"({', '.join(str(s['placement']['over_max_copies']) for s in over)} models)."
        )
    drift = [
        s
        for s in steps
        if s["placement"]["etcd_only_copies"] or s["placement"]["runtime_only_copies"]
    ]
    if drift:
        out.append(
            "etcd's records and the runtimes disagreed after the loads settled: "
            + "; ".join(
                f"{s['nodes']} × {s['models']:,}: {s['placement']['etcd_only_copies']} copies only "
                f"in etcd, {s['placement']['runtime_only_copies']} only in a runtime"
                for s in drift
            )
            + "."
        )
    herded = []
    for s in steps:
        p = s["placement"]
        mpn = p["models_per_node"]
        if mpn["mean"] and mpn["max"] > 1.5 * mpn["mean"] and mpn["max"] - mpn["min"] > 2:
            out.append(
                f"Placement imbalance at {s['nodes']} × {s['models']:,}: models per node "
                f"{mpn['min']:.0f}–{mpn['max']:.0f} (mean {mpn['mean']:.1f}), room used "
                f"{p['used_fraction']['min']:.0%}–{p['used_fraction']['max']:.0%}; "
                f"{p['loads']} loads went to {p['nodes_with_loads']} of {s['nodes']} nodes."
            )
        full = capacity_errors(s)
        emptiest = p["used_fraction"]["min"]
        if (
            p["nodes_with_loads"] < s["nodes"] / 2
            or (full and emptiest < 0.5)
            or (p["evictions"] and emptiest < 0.2)
        ):
            herded.append((s, full))
    if herded:
        out.append(
            "Placement herds loads onto a few nodes: "
            + "; ".join(
                f"{s['nodes']} × {s['models']:,}: {s['placement']['nodes_with_loads']} of "
                f"{s['nodes']} nodes took loads"
                + (f", {full} requests failed for lack of room" if full else "")
                + (
                    f", {s['placement']['evictions']} evictions"
                    if s["placement"]["evictions"]
                    else ""
                )
                + f" while the emptiest node used {s['placement']['used_fraction']['min']:.0%}"
                for s, full in herded
            )
            + ". Why (a lead to check, from the code): placement.choose_node sends every miss "
            "to the node with the most free bytes (ties: the smallest id), read from each "
            "node's instance record, which the node republishes once a load has finished "
            "rather than when it claims one; until the record catches up, every router picks "
            "the same node, which then has to fit all those loads at once."
            + (
                " Requests that got a peer's RESOURCE_EXHAUSTED (status RESOURCE_EXHAUSTED "
                "above) were not placed on another node: the router passes that status to the "
                "client."
                if any(s["requests"]["errors"].get("status RESOURCE_EXHAUSTED") for s, _ in herded)
                else ""
            )
        )
    by_models: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in steps:
        by_models[s["models"]].append(s)
    for models, group in sorted(by_models.items()):
        if len(group) < 2:
            continue
        lo, hi = min(group, key=lambda s: s["nodes"]), max(group, key=lambda s: s["nodes"])
        grow = hi["nodes"] / lo["nodes"]
        idle = _ratio(hi["etcd"]["idle"]["per_node_per_s"], lo["etcd"]["idle"]["per_node_per_s"])
        per_req = _ratio(hi["etcd"]["load"]["per_request"], lo["etcd"]["load"]["per_request"])
        events = _ratio(
            hi["etcd"]["load"]["watch_events_per_request"],
            lo["etcd"]["load"]["watch_events_per_request"],
        )
        idle_events = _ratio(
            hi["etcd"]["idle"]["watch_events_per_s"], lo["etcd"]["idle"]["watch_events_per_s"]
        )
        out.append(
            f"{models:,} models, {lo['nodes']} → {hi['nodes']} nodes (x{grow:g}): etcd requests "
            f"per routed request x{per_req}, per idle node per second x{idle}; watch events "
            f"per request x{events}, at rest x{idle_events} (every write reaches every node's "
            "mirror, so events grow with nodes × writes; idle nodes write their record only "
            f"when it changes, and once a minute); routing p50 {route_growth(lo, hi)} (a "
            "decision to load elsewhere ranks every eligible node)."
        )
    by_nodes: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in steps:
        by_nodes[s["nodes"]].append(s)
    for nodes, group in sorted(by_nodes.items()):
        if len(group) < 2:
            continue
        lo, hi = min(group, key=lambda s: s["models"]), max(group, key=lambda s: s["models"])
        out.append(
            f"{nodes} nodes, {lo['models']:,} → {hi['models']:,} models: routing p50 "
            f"{route_growth(lo, hi)}, start "
            f"{lo['start_s']:.1f} → {hi['start_s']:.1f} s (every node lists every record), "
            f"process RSS {lo['process_rss_mib']:.0f} → {hi['process_rss_mib']:.0f} MiB."
        )
    lagging = [s for s in steps if s["requests"]["send_lag_ms"]["p99"] > 100]
    if lagging:
        out.append(
            "The process fell behind the schedule (send lag p99 over 100 ms) at "
            + ", ".join(f"{s['nodes']} × {s['models']:,}" for s in lagging)
            + ": latencies there include queueing in this one process; counts are still exact."
        )
    out.append(
        "Times are of one Python process on "
        f"{f['machine']['cpus']} CPUs running every node: compare them between steps, "
        "not with a real mesh; etcd counts are exact."
    )
    return tuple(out)


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


def plots(f: dict[str, Any]) -> tuple[report.Plot, ...]:
    steps = f["steps"]
    by_models: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    by_nodes: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in steps:
        by_models[s["models"]].append(s)
        by_nodes[s["nodes"]].append(s)
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
    route_models: list[report.Series] = []
    for nodes, group in sorted(by_nodes.items()):
        route_models += route_series(
            sorted(group, key=lambda s: s["models"]), "models", f"{nodes} nodes"
        )
    spread_series = []
    for s in steps:
        counts = s["placement"]["models_per_node_sorted"]
        n = len(counts)
        spread_series.append(
            report.Series(
                f"{s['nodes']} nodes × {s['models']:,} models",
                tuple((i + 0.5) / n for i in range(n)),
                tuple(float(c) for c in counts),
            )
        )
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
            tuple(spread_series),
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
