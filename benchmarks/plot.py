"""Draw the throughput and latency figures of benchmark records (``--json`` files) to a PNG.

    .venv/bin/python benchmarks/plot.py benchmarks/results/*.json [-o figures.png]

Two panels of horizontal bars, one bar per figure, labelled ``benchmark: figure``:
throughput (every unit per second, log scale, since the figures span 1,000 to 200,000)
and latency (figures in ms or µs, drawn in ms). Other figures (CPU µs, seconds, ratios)
stay in the JSON only. The title names the commit, date and load average of the records.

matplotlib comes with the ``bench`` extra (``make bench`` installs it); without it this
tool says so and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import MISSING_EXTRA, Record, read_record

DEFAULT_OUTPUT = Path("benchmarks/results/figures.png")
_LATENCY_UNITS = {"ms": 1.0, "µs": 0.001}  # unit -> factor to milliseconds


@dataclass(frozen=True)
class Bar:
    """One bar of a panel."""

    label: str  # "benchmark: figure"
    value: float  # in the panel's unit


def panels(records: list[Record]) -> tuple[list[Bar], list[Bar]]:
    """The throughput bars (per second) and latency bars (ms) of ``records``, in order."""
    throughput: list[Bar] = []
    latency: list[Bar] = []
    for record in records:
        for name, figure in record["figures"].items():
            label = f"{record['benchmark']}: {name}"
            unit = figure["unit"]
            if unit.endswith("/s"):
                throughput.append(Bar(f"{label} ({unit})", figure["value"]))
            elif unit in _LATENCY_UNITS:
                latency.append(Bar(label, figure["value"] * _LATENCY_UNITS[unit]))
    return throughput, latency


def _title(records: list[Record]) -> str:
    commits = sorted({(r["commit"] or "no commit")[:10] for r in records})
    dates = sorted(r["date"][:10] for r in records)
    loads = [r["load_average"][0] for r in records]
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return (
        f"raftmq benchmarks, commit {', '.join(commits)}, {span}, "
        f"load {min(loads):.1f}-{max(loads):.1f}"
    )


def draw(records: list[Record], output: Path) -> None:
    """Draw ``records``' figures to ``output`` (PNG); SystemExit without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        from matplotlib import pyplot
    except ImportError:
        raise SystemExit(MISSING_EXTRA.format(what="benchmarks/plot.py")) from None
    throughput, latency = panels(records)
    shown = [(bars, title) for bars, title in ((throughput, "throughput, per second (log scale)"),
                                                 (latency, "latency, ms")) if bars]  # fmt: skip
    if not shown:
        raise SystemExit("no throughput or latency figures in the records")
    heights = [max(1.5, 0.28 * len(bars) + 0.8) for bars, _ in shown]
    figure, axes = pyplot.subplots(
        len(shown), 1, figsize=(11, sum(heights) + 0.8), height_ratios=heights, squeeze=False
    )
    for axis, (bars, title) in zip(axes[:, 0], shown, strict=True):
        positions = range(len(bars))
        axis.barh(positions, [bar.value for bar in bars], color="tab:blue")
        axis.set_yticks(positions, [bar.label for bar in bars], fontsize=8)
        axis.invert_yaxis()  # first measured on top
        axis.set_title(title, fontsize=10, loc="left")
        axis.grid(axis="x", alpha=0.3)
        if bars is throughput:
            axis.set_xscale("log")
        for position, bar in zip(positions, bars, strict=True):
            axis.annotate(
                f" {bar.value:,.0f}" if bar.value >= 100 else f" {bar.value:.2f}",
                (bar.value, position),
                va="center",
                fontsize=7,
            )
    figure.suptitle(_title(records), fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="png", dpi=100)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> None:
    """Read the records named on the command line and draw them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="JSON files written with --json")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="the PNG")
    args = parser.parse_args(argv)
    try:
        records = [read_record(path) for path in args.records]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read a record: {exc}") from None
    draw(records, args.output)
    print(f"figures drawn to {args.output}")


if __name__ == "__main__":
    main()
