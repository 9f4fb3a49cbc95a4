"""``python -m load_tests SCENARIO [--quick]``: run one benchmark scenario
(or ``all``), print its table and notes, write the day's report, and end with
one JSON object of its figures on the last line.

Why one entry point: every claim about meshserve's speed should be one
command anyone can repeat, and every run should leave a report that can be
compared with the next one (``load_tests/results/<date>/``: ``report.md``,
``results.json`` and PNG plots; see :mod:`load_tests.report`).

Scenarios (each module's docstring says what it measures and why):

* ``cache``: the mesh's eviction rules against LRU, static and Belady on
  Zipf traces (pure, seconds).
* ``overhead``: the same model and MLServer reached directly, through a bare
  Python proxy, and through the mesh, at concurrency 1, at saturation and at
  half the direct saturation rate; added µs and CPU-µs per request.
* ``cold``: the first request of an unloaded model (S3 → node → MLServer),
  split into pull, runtime load, first inference and the mesh's own work,
  vs the same steps done by hand.
* ``scale``: 100,000 registered models: time to register, etcd bytes and node
  memory per model, routing latency with 10 vs 100,000 registered.
* ``nodes``: 1, 2 and 3 nodes under a Zipf load that does not fit one node:
  throughput, p99, loads, evictions and hit rate.
* ``simulate``: up to 100 node agents in one process (the real placement,
  cache manager and data plane, a synthetic runtime) against a real etcd:
  placement spread and etcd traffic as nodes and models grow.
* ``peers``: meshserve next to Ray Serve's model multiplexing and one
  runtime holding every model, on the same seeded traces, models, room and
  HTTP JSON client (Ray from its own venv, ``.runtimes/ray``).

``--quick`` runs a small version of each (under a minute); targets missed are
reported in the notes, never turned into a failing exit status. The exit
status is 1 only if a scenario could not run (or left a process behind).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence

from load_tests import report

SCENARIOS = {
    "cache": "load_tests.cache_policy",
    "overhead": "load_tests.overhead",
    "cold": "load_tests.cold_path",
    "scale": "load_tests.scale",
    "nodes": "load_tests.nodes",
    "simulate": "load_tests.simulate",
    "peers": "load_tests.peers",
}


def run_one(name: str, quick: bool, write: bool, extra: Sequence[str]) -> report.ScenarioReport:
    module = importlib.import_module(SCENARIOS[name])
    t0 = time.monotonic()
    result: report.ScenarioReport = module.run(quick, extra)
    took = time.monotonic() - t0
    print(f"== {result.title} ({name}{', quick' if quick else ''}, {took:.1f} s)")
    print(result.table)
    for n in result.notes:
        print(f"- {n}")
    if write:
        folder = report.write(result)
        print(f"report: {folder / 'report.md'}")
    print(flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load_tests", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--quick", action="store_true", help="a small run (under a minute each)")
    p.add_argument(
        "--no-report", action="store_true", help="print only; write nothing under results/"
    )
    args, extra = p.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    figures: dict[str, object] = {}
    failed: list[str] = []
    for name in names:
        try:
            r = run_one(name, args.quick, not args.no_report, extra)
            figures[name] = r.figures
        except Exception as e:
            logging.exception("scenario %s failed", name)
            failed.append(name)
            figures[name] = {"error": f"{type(e).__name__}: {e}"}
    if len(names) == 1:
        out: object = {"scenario": names[0], "quick": args.quick, **{"figures": figures[names[0]]}}
    else:
        out = {"scenario": "all", "quick": args.quick, "figures": figures}
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
