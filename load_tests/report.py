"""What a scenario hands back, and the report written from it.

Why it exists: a benchmark is only worth its figures if they can be read
later and compared between runs. Each scenario returns a frozen
:class:`ScenarioReport` (its figures as JSON-able data, a plain-text table,
notes on the targets, and its plots as data); :func:`write` keeps one folder
per day, ``load_tests/results/<YYYY-MM-DD>/``, with

* ``results.json``: every scenario run that day, the latest run of each
  (running one scenario keeps the others' figures);
* ``report.md``: the tables and notes of all of them, with their plots;
* ``*.png``: the plots (latency CDFs, hit rate vs capacity), drawn with
  matplotlib's non-interactive Agg backend.

Plots are data here (:class:`Plot`, :class:`Series`) so that scenarios stay
free of drawing code and the report can be drawn again from the data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import tempfile
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

_C = TypeVar("_C")

RESULTS_ROOT = pathlib.Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Series:
    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    dashed: bool = False
    """Drawn dashed and on top (for a line that may hide another)."""


@dataclasses.dataclass(frozen=True)
class Plot:
    filename: str
    """A ``.png`` name, unique across scenarios (prefix it with the scenario)."""
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    xlog: bool = False
    ylog: bool = False
    ylim: tuple[float, float] | None = None
    yticks: tuple[tuple[float, str], ...] = ()
    """Positions and labels, e.g. for percentiles on a CDF's axis."""
    xticks: tuple[tuple[float, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class ScenarioReport:
    scenario: str
    title: str
    quick: bool
    figures: Mapping[str, Any]
    """Every figure, JSON-able (the line printed last)."""
    table: str
    """For people: printed, and put in the report as it is."""
    notes: tuple[str, ...] = ()
    """Targets met or missed, by how much, and why."""
    plots: tuple[Plot, ...] = ()


def measure(
    scenario: str,
    measure_async: Callable[[_C, pathlib.Path], Coroutine[Any, Any, dict[str, Any]]],
    config: _C,
) -> dict[str, Any]:
    """A scenario's figures, measured in a fresh temporary folder that is
    removed after; raises if the run left a process it started running
    (its ``leftover_processes`` figure)."""
    with tempfile.TemporaryDirectory(prefix=f"meshserve-{scenario}-") as tmp:
        f = asyncio.run(measure_async(config, pathlib.Path(tmp)))
    if f["leftover_processes"]:
        raise RuntimeError(f"processes left running: {f['leftover_processes']}")
    return f


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def day_folder(root: pathlib.Path, now: datetime.datetime) -> pathlib.Path:
    return root / now.strftime("%Y-%m-%d")


def draw(plot: Plot, path: pathlib.Path) -> None:
    """Draw ``plot`` into a PNG at ``path``."""
    import matplotlib  # noqa: PLC0415 (only the report draws; scenarios need no matplotlib)

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    fig, ax = pyplot.subplots(figsize=(7.0, 4.5), dpi=110)
    try:
        for s in plot.series:
            ax.plot(
                s.xs,
                s.ys,
                label=s.label,
                marker="o" if len(s.xs) <= 12 else None,
                linestyle="--" if s.dashed else "-",
                zorder=3 if s.dashed else 2,
            )
        if plot.xlog:
            ax.set_xscale("log")
        if plot.ylog:
            ax.set_yscale("log")
        if plot.ylim is not None:
            ax.set_ylim(*plot.ylim)
        if plot.xticks:
            ax.set_xticks([p for p, _ in plot.xticks], [label for _, label in plot.xticks])
            ax.minorticks_off()
        if plot.yticks:
            ax.set_yticks([p for p, _ in plot.yticks], [label for _, label in plot.yticks])
        ax.set_title(plot.title)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if len(plot.series) > 1:
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        pyplot.close(fig)


def entry(report: ScenarioReport, now: datetime.datetime) -> dict[str, Any]:
    """A scenario's record in ``results.json``."""
    return {
        "title": report.title,
        "quick": report.quick,
        "finished": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": report.figures,
        "table": report.table,
        "notes": list(report.notes),
        "plots": [p.filename for p in report.plots],
    }


def markdown(results: Mapping[str, Mapping[str, Any]], day: str) -> str:
    """``report.md`` from the records of ``results.json``."""
    lines = [
        f"# meshserve benchmarks, {day}",
        "",
        "Each section is the latest run of one scenario that day "
        "(`python -m load_tests SCENARIO [--quick]`); every figure is in "
        "`results.json`. Compare ratios and added µs, not absolute times, "
        "and quote the CPU count with them.",
    ]
    for name, r in sorted(results.items()):
        m = r.get("machine", {})
        lines += [
            "",
            f"## {r['title']} (`{name}`{', --quick' if r.get('quick') else ''})",
            "",
            f"Finished {r.get('finished', '?')} on {m.get('cpus', '?')} CPUs, "
            f"Python {m.get('python', '?')}.",
            "",
            "```",
            r["table"],
            "```",
        ]
        if r.get("notes"):
            lines.append("")
            lines += [f"- {n}" for n in r["notes"]]
        for png in r.get("plots", []):
            lines += ["", f"![{png}]({png})"]
    return "\n".join(lines) + "\n"


def write(
    report: ScenarioReport,
    root: pathlib.Path = RESULTS_ROOT,
    now: datetime.datetime | None = None,
) -> pathlib.Path:
    """Add ``report`` to the day's folder (plots, ``results.json``,
    ``report.md``); returns the folder."""
    now = now or datetime.datetime.now().astimezone()
    folder = day_folder(root, now)
    folder.mkdir(parents=True, exist_ok=True)
    for plot in report.plots:
        draw(plot, folder / plot.filename)
    path = folder / "results.json"
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {}
    results[report.scenario] = entry(report, now)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    (folder / "report.md").write_text(markdown(results, folder.name))
    return folder


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])
