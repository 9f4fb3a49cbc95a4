"""The table, notes and plots of the scenario "peers", from its figures.

Why it exists: :mod:`load_tests.peers` measures; turning its figures into
something a person reads (latencies and loads side by side per trace, the
offline references next to what each system loaded, CPU and memory per
process, what the comparison says and what it cannot) is a separate job,
and a pure one, so it is tested on made-up figures without any server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from load_tests import report

REFERENCES = ("lru_cluster", "lru_affinity", "belady")


def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def ok_systems(f: Mapping[str, Any]) -> dict[str, Any]:
    """The systems that ran, by name (those that failed left an ``error``)."""
    return {k: v for k, v in f["systems"].items() if "error" not in v}


def point_of(system: Mapping[str, Any], shape: str, rate: float) -> Mapping[str, Any] | None:
    points: list[Mapping[str, Any]] = system.get("points", [])
    for p in points:
        if p["shape"] == shape and p["rate_per_s"] == rate:
            return p
    return None


def latency_table(f: Mapping[str, Any]) -> str:
    rows = []
    for t in f["traces"]:
        for name, s in ok_systems(f).items():
            p = point_of(s, t["shape"], t["rate_per_s"])
            if p is None:
                continue
            lat = p["latency_us"]
            errors = sum(p["errors"].values())
            rows.append(
                [
                    t["shape"],
                    f"{t['rate_per_s']:g}",
                    name,
                    f"{p['ok']}/{p['sent']}",
                    str(errors),
                    *(_ms(lat[k]) for k in ("p50", "p90", "p99", "max")),
                    f"{p['loads_per_100']:.1f}",
                ]
            )
    headers = ["trace", "req/s", "system", "ok/sent", "errors", "p50 ms", "p90 ms"]
    return report.fmt_table([*headers, "p99 ms", "max ms", "loads/100"], rows)


def loads_table(f: Mapping[str, Any]) -> str:
    systems = [n for n in ok_systems(f) if n != "floor"]
    rows = []
    for t in f["traces"]:
        m, refs = t["measured"], t["references_loads_per_100"]
        got = []
        for name in systems:
            p = point_of(f["systems"][name], t["shape"], t["rate_per_s"])
            got.append(f"{p['loads_per_100']:.1f}" if p else "-")
        rows.append(
            [
                t["shape"],
                f"{t['rate_per_s']:g}",
                str(m["measured_requests"]),
                f"{m['alpha_fitted']:.2f}",
                f"{m['cv']:.1f}",
                *(f"{refs[k]:.1f}" for k in REFERENCES),
                *got,
            ]
        )
    headers = ["trace", "req/s", "timed", "α fit", "CV", "LRU pooled", "LRU affinity"]
    return report.fmt_table([*headers, "Belady", *systems], rows)


def process_table(f: Mapping[str, Any]) -> str:
    rows = []
    for name, s in ok_systems(f).items():
        sent = sum(p["sent"] for p in s["points"]) or 1
        roles = sorted(set(s["idle_rss_mib"]) | {r for p in s["points"] for r in p["cpu_s"]})
        for role in roles:
            cpu = sum(p["cpu_s"].get(role, 0.0) for p in s["points"])
            rss = s["idle_rss_mib"].get(role, 0.0)
            rows.append([name, role, f"{rss:.0f}", f"{cpu:.2f}", f"{1000 * cpu / sent:.2f}"])
        cpu_all = sum(sum(p["cpu_s"].values()) for p in s["points"])
        rows.append(
            [
                name,
                "all",
                f"{s['idle_rss_total_mib']:.0f}",
                f"{cpu_all:.2f}",
                f"{1000 * cpu_all / sent:.2f}",
            ]
        )
        client = sum(p.get("client_cpu_s", 0.0) for p in s["points"])
        others = sum(p.get("others_cpu_s", 0.0) for p in s["points"])
        rows.append([name, "(the client)", "", f"{client:.2f}", f"{1000 * client / sent:.2f}"])
        rows.append([name, "(other work on the machine)", "", f"{others:.2f}", ""])
    headers = ["system", "process", "idle RSS MiB", "CPU s (timed)", "CPU ms/request"]
    return report.fmt_table(headers, rows)


def table(f: Mapping[str, Any]) -> str:
    c = f["config"]
    sizes = f.get("model_file_mib", {})
    head = (
        f"{c['models']} scikit-learn forests ({sizes.get('min', '?')}-{sizes.get('max', '?')} "
        f"MiB files); meshserve {c['nodes']} nodes and Ray Serve {c['nodes']} replicas, room "
        f"for {c['slots']} models each; floor: one MLServer with all {c['models']} loaded.\n"
        f"Client and protocol for all: {f['protocol']}. Each point: "
        f"{c['warmup_s']:g} s untimed, then {c['measured_s']:g} s timed; latency from the "
        f"scheduled send time; {f['machine']['cpus']} CPUs.\n"
    )
    return (
        head
        + "\n"
        + latency_table(f)
        + "\n\nloads per 100 timed requests: offline references on the same trace "
        + "(every cache starting empty before the warm-up) and the systems\n"
        + loads_table(f)
        + "\n\nprocesses: idle RSS before the first request, CPU seconds over every "
        + "timed part\n"
        + process_table(f)
    )


def _p99_ratio(f: Mapping[str, Any], a: str, b: str) -> list[tuple[str, float, float]]:
    """(trace, rate, p99 of a / p99 of b) at every point both ran."""
    out = []
    sa, sb = f["systems"][a], f["systems"][b]
    for t in f["traces"]:
        pa = point_of(sa, t["shape"], t["rate_per_s"])
        pb = point_of(sb, t["shape"], t["rate_per_s"])
        if pa and pb and pb["latency_us"]["p99"]:
            ratio = pa["latency_us"]["p99"] / pb["latency_us"]["p99"]
            out.append((t["shape"], t["rate_per_s"], round(ratio, 2)))
    return out


def comparison_notes(f: Mapping[str, Any]) -> list[str]:
    ran = ok_systems(f)
    out = []
    if "meshserve" in ran and "ray" in ran:
        ratios = _p99_ratio(f, "meshserve", "ray")
        if ratios:
            lo, hi = min(r[2] for r in ratios), max(r[2] for r in ratios)
            out.append(
                f"p99 meshserve / Ray Serve: {lo}-{hi} over {len(ratios)} points "
                f"(below 1: the mesh's tail is shorter); per point: "
                + ", ".join(f"{s}@{r:g} {x}" for s, r, x in ratios)
                + "."
            )
    for name in ("meshserve", "ray"):
        if name not in ran:
            continue
        over = []
        for t in f["traces"]:
            p = point_of(ran[name], t["shape"], t["rate_per_s"])
            best = t["references_loads_per_100"]["belady"]
            if p and best > 0:
                over.append(p["loads_per_100"] / best)
        if over:
            out.append(
                f"{name} loaded {min(over):.2f}-{max(over):.2f} × Belady's loads "
                "(the fewest any cache of the same room could make on the trace)."
            )
        if over and min(over) < 1.0:
            out.append(
                f"{name} loaded fewer than Belady at some points: the references serve "
                "the requests one at a time in trace order, while a system that is "
                "behind serves every request queued for a model with one load (paid "
                "for in latency: see its p50 there)."
            )
    return out + failure_notes(f)


def failure_notes(f: Mapping[str, Any]) -> list[str]:
    """Where a system failed requests: its percentiles cover only the answered
    ones, so they flatter it; say how many and what it answered a second."""
    out = []
    deadline = f["config"].get("timeout_s", "?")
    for name, s in ok_systems(f).items():
        for p in s["points"]:
            failed = sum(p["errors"].values())
            if failed:
                kinds = ", ".join(f"{k} {n}" for k, n in sorted(p["errors"].items()))
                out.append(
                    f"{name} at {p['shape']}@{p['rate_per_s']:g}/s: {failed} of {p['sent']} "
                    f"requests failed ({kinds}; the client waits {deadline} s), "
                    f"{p['throughput_per_s']:g} answered a second; its "
                    "percentiles there cover only the answered requests."
                )
    return out


def notes(f: Mapping[str, Any]) -> tuple[str, ...]:
    out = [
        "Same models, room, traces and client for every system; all through V2 JSON over "
        "HTTP (Ray Serve's multiplexing is reachable only through its HTTP proxy or a "
        "Python handle, so the mesh is called through its V2 REST port here, not gRPC).",
        *comparison_notes(f),
    ]
    for name, s in f["systems"].items():
        if "error" in s:
            out.append(f"{name} did not run: {s['error']}")
    out += contention_notes(f)
    out.append(
        f"On {f['machine']['cpus']} CPUs every system shares the machine with the client and "
        "the others' idle processes; compare the systems with each other, not the "
        "absolute times with another machine. One MLServer holding every model is the "
        "floor: no loads and no hop."
    )
    return tuple(out)


def contention_notes(f: Mapping[str, Any]) -> list[str]:
    """Whether other work on the machine took CPU during the timed parts:
    a shared machine makes every figure noisier, and unevenly so."""
    out = []
    for name, s in ok_systems(f).items():
        ours = sum(sum(p["cpu_s"].values()) + p.get("client_cpu_s", 0.0) for p in s["points"])
        others = sum(p.get("others_cpu_s", 0.0) for p in s["points"])
        if others > 0.25 * ours:
            out.append(
                f"While {name} was timed, processes that are not part of this run took "
                f"{others:.1f} CPU s (the run's own: {ours:.1f} s): the machine was shared, "
                "so its figures carry that noise; rerun on a quiet machine to compare closely."
            )
    return out


def plots(f: Mapping[str, Any]) -> tuple[report.Plot, ...]:
    """p99 against the rate, one line per system, a plot per trace shape."""
    out = []
    shapes = sorted({t["shape"] for t in f["traces"]})
    for shape in shapes:
        rates = sorted({t["rate_per_s"] for t in f["traces"] if t["shape"] == shape})
        series = []
        for name, s in ok_systems(f).items():
            pts = [point_of(s, shape, r) for r in rates]
            ys = tuple(p["latency_us"]["p99"] / 1000 for p in pts if p)
            if len(ys) == len(rates):
                series.append(report.Series(name, tuple(rates), ys))
        if series:
            out.append(
                report.Plot(
                    filename=f"peers_p99_{shape}.png",
                    title=f"p99 vs rate, trace {shape}",
                    xlabel="requests a second",
                    ylabel="p99 latency, ms",
                    series=tuple(series),
                    ylog=True,
                )
            )
    return tuple(out)
