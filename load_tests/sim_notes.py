"""The notes of the simulation's report (:mod:`load_tests.sim_report`): the
reading of its steps, one note at a time.

Why it exists: the notes are where the figures are judged (which steps
failed, where placement herded loads, how etcd traffic and routing time grow
with nodes and models); each judgement is its own function here, so that
each reads on its own and the report's module stays the table and plots.
Everything here is pure: it takes the figures dict
:func:`load_tests.simulate.measure_async` returns and nothing else.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

Step = dict[str, Any]


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


def steps_by(steps: Sequence[Step], key: str) -> dict[int, list[Step]]:
    """The steps grouped by their ``key`` field (``models`` or ``nodes``), in
    their order."""
    groups: dict[int, list[Step]] = collections.defaultdict(list)
    for s in steps:
        groups[s[key]].append(s)
    return groups


def failed_requests_note(steps: Sequence[Step]) -> str:
    """Which steps had requests that were not routed, or that none had."""
    failed = [s for s in steps if s["requests"]["ok"] < s["requests"]["sent"]]
    if not failed:
        return "Every request was routed and answered by a runtime holding its model."
    return (
        "Not every request was routed: "
        + "; ".join(
            f"{s['nodes']} × {s['models']:,}: {s['requests']['sent'] - s['requests']['ok']} "
            f"failed ({', '.join(f'{k} {v}' for k, v in s['requests']['errors'].items())})"
            for s in failed
        )
        + "."
    )


def over_max_copies_notes(steps: Sequence[Step]) -> list[str]:
    """A note if any step saw a model with more copies than its max_copies."""
    over = [s for s in steps if s["placement"]["over_max_copies"]]
    if not over:
        return []
    return [
        "A model had more copies at once than its max_copies "
        f"({', '.join(str(s['placement']['over_max_copies']) for s in over)} models)."
    ]


def drift_notes(steps: Sequence[Step]) -> list[str]:
    """A note if etcd's records and the runtimes disagreed after a step."""
    drift = [
        s
        for s in steps
        if s["placement"]["etcd_only_copies"] or s["placement"]["runtime_only_copies"]
    ]
    if not drift:
        return []
    return [
        "etcd's records and the runtimes disagreed after the loads settled: "
        + "; ".join(
            f"{s['nodes']} × {s['models']:,}: {s['placement']['etcd_only_copies']} copies only "
            f"in etcd, {s['placement']['runtime_only_copies']} only in a runtime"
            for s in drift
        )
        + "."
    ]


def imbalance_notes(steps: Sequence[Step]) -> list[str]:
    """One note per step whose models per node were far from even."""
    out = []
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
    return out


def herded_steps(steps: Sequence[Step]) -> list[tuple[Step, int]]:
    """The steps where placement herded loads onto a few nodes, each with
    its requests that failed for lack of room."""
    herded = []
    for s in steps:
        p = s["placement"]
        full = capacity_errors(s)
        emptiest = p["used_fraction"]["min"]
        if (
            p["nodes_with_loads"] < s["nodes"] / 2
            or (full and emptiest < 0.5)
            or (p["evictions"] and emptiest < 0.2)
        ):
            herded.append((s, full))
    return herded


def herding_notes(steps: Sequence[Step]) -> list[str]:
    """A note on the herded steps and a lead to why, if any step was."""
    herded = herded_steps(steps)
    if not herded:
        return []
    return [
        "Placement herds loads onto a few nodes: "
        + "; ".join(
            f"{s['nodes']} × {s['models']:,}: {s['placement']['nodes_with_loads']} of "
            f"{s['nodes']} nodes took loads"
            + (f", {full} requests failed for lack of room" if full else "")
            + (f", {s['placement']['evictions']} evictions" if s["placement"]["evictions"] else "")
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
    ]


def growth_with_nodes_note(models: int, group: Sequence[Step]) -> str:
    """How etcd traffic, watch events and routing grew from the fewest to the
    most nodes, at ``models`` registered."""
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
    return (
        f"{models:,} models, {lo['nodes']} → {hi['nodes']} nodes (x{grow:g}): etcd requests "
        f"per routed request x{per_req}, per idle node per second x{idle}; watch events "
        f"per request x{events}, at rest x{idle_events} (every write reaches every node's "
        "mirror, so events grow with nodes × writes; idle nodes write their record only "
        f"when it changes, and once a minute); routing p50 {route_growth(lo, hi)} (a "
        "decision to load elsewhere ranks every eligible node)."
    )


def growth_with_models_note(nodes: int, group: Sequence[Step]) -> str:
    """How routing, start and memory grew from the fewest to the most models,
    at ``nodes`` nodes."""
    lo, hi = min(group, key=lambda s: s["models"]), max(group, key=lambda s: s["models"])
    return (
        f"{nodes} nodes, {lo['models']:,} → {hi['models']:,} models: routing p50 "
        f"{route_growth(lo, hi)}, start "
        f"{lo['start_s']:.1f} → {hi['start_s']:.1f} s (every node lists every record), "
        f"process RSS {lo['process_rss_mib']:.0f} → {hi['process_rss_mib']:.0f} MiB."
    )


def lag_notes(steps: Sequence[Step]) -> list[str]:
    """A note if the process fell behind its sending schedule in a step."""
    lagging = [s for s in steps if s["requests"]["send_lag_ms"]["p99"] > 100]
    if not lagging:
        return []
    return [
        "The process fell behind the schedule (send lag p99 over 100 ms) at "
        + ", ".join(f"{s['nodes']} × {s['models']:,}" for s in lagging)
        + ": latencies there include queueing in this one process; counts are still exact."
    ]


def notes(f: dict[str, Any]) -> tuple[str, ...]:
    steps = f["steps"]
    out = [failed_requests_note(steps)]
    out += over_max_copies_notes(steps)
    out += drift_notes(steps)
    out += imbalance_notes(steps)
    out += herding_notes(steps)
    for models, group in sorted(steps_by(steps, "models").items()):
        if len(group) >= 2:
            out.append(growth_with_nodes_note(models, group))
    for nodes, group in sorted(steps_by(steps, "nodes").items()):
        if len(group) >= 2:
            out.append(growth_with_models_note(nodes, group))
    out += lag_notes(steps)
    out.append(
        "Times are of one Python process on "
        f"{f['machine']['cpus']} CPUs running every node: compare them between steps, "
        "not with a real mesh; etcd counts are exact."
    )
    return tuple(out)
