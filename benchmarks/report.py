"""What every benchmark shares: a live progress display while it runs and a JSON record
of its figures afterwards.

A benchmark adds the options with :func:`add_options`, opens a :class:`Report` around its
work, wraps each phase in :meth:`Report.phase` and records each figure it prints with
:meth:`Report.figure`; ``--json PATH`` then writes one object::

    {"benchmark": "node", "command": ["benchmarks/node.py", "--writes", "20000"],
     "options": {...}, "date": "2026-12-01T10:00:00+00:00", "commit": "4f8f2e2...",
     "commit_dirty": false, "load_average": [1.2, 0.9, 0.8], "python": "3.11.9",
     "figures": {"commit latency p50": {"value": 1.8, "unit": "ms"}, ...}}

The progress display (rich, from the ``bench`` extra) shows one line per running phase: a
bar when the phase knows its total, else a spinner with the elapsed time. It is on when
stdout is a terminal, or with ``--progress``; ``--no-progress`` turns it off. The text a
benchmark prints is unchanged either way (rich prints it above the live lines).

Counting is cheap enough for a timed loop: :meth:`Phase.advance` only adds to an integer,
and the display reads it when it redraws (four times a second).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

ROOT = Path(__file__).resolve().parents[1]  # the repository (for its git commit)
MISSING_EXTRA = (
    "{what} needs the bench extra: .venv/bin/pip install -e '.[bench]' (make bench installs it)"
)


class Figure(TypedDict):
    """One measured figure as stored in the JSON record."""

    value: float
    unit: str  # "msg/s", "entries/s", "ms", "µs CPU" ...: plot.py picks by unit


class Record(TypedDict):
    """The JSON object a benchmark writes with ``--json``."""

    benchmark: str  # the script's name, e.g. "node"
    command: list[str]  # sys.argv of the run
    options: dict[str, Any]  # the parsed options
    date: str  # ISO 8601, UTC, when the run started
    commit: str | None  # HEAD of the checkout, None outside git
    commit_dirty: bool  # the checkout had uncommitted changes
    load_average: list[float]  # 1, 5, 15 minutes, when the run started
    python: str  # interpreter version
    figures: dict[str, Figure]  # name -> figure, in the order they were measured


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH`` and ``--progress`` / ``--no-progress`` to a benchmark's parser."""
    group = parser.add_argument_group("report")
    group.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON"
    )
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show live progress (default: when stdout is a terminal)",
    )


@dataclass
class Phase:
    """One running phase: what it does and how far it got."""

    description: str  # the status line's text
    total: float | None  # units of work the phase has; None: unknown (a spinner)
    completed: float = 0  # units done so far; read by the display when it redraws

    def advance(self, amount: float = 1) -> None:
        """Count ``amount`` more units done (an integer add: fine inside timed loops)."""
        self.completed += amount

    def describe(self, description: str) -> None:
        """Change the status line's text."""
        self.description = description


@dataclass
class Report:
    """The figures of one benchmark run, and its progress display while it runs."""

    benchmark: str  # the script's name
    options: argparse.Namespace  # parsed options, with ``json`` and ``progress``
    figures: dict[str, Figure] = field(default_factory=dict)  # measured so far
    _record: Record | None = None  # header fields, fixed when the run starts
    _display: _Display | None = None  # None: no progress shown

    def __enter__(self) -> Report:
        self._record = _header(self.benchmark, self.options)
        wanted: bool | None = getattr(self.options, "progress", None)
        if wanted is None:
            wanted = sys.stdout.isatty() and _rich_installed()
        if wanted:
            self._display = _Display.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None
        path: Path | None = getattr(self.options, "json", None)
        if path is not None and kind is None:
            write_record(path, self.record())
            print(f"figures written to {path}")

    def figure(self, name: str, value: float, unit: str) -> None:
        """Record one figure (a name used twice keeps the last value)."""
        self.figures[name] = Figure(value=float(value), unit=unit)

    @contextlib.contextmanager
    def phase(self, description: str, total: float | None = None) -> Iterator[Phase]:
        """A phase shown as one live line while the ``with`` block runs."""
        phase = Phase(description, total)
        if self._display is None:
            yield phase
            return
        self._display.add(phase)
        try:
            yield phase
        finally:
            self._display.remove(phase)

    def record(self) -> Record:
        """The JSON object of this run so far."""
        header = self._record or _header(self.benchmark, self.options)
        return Record(**{**header, "figures": dict(self.figures)})


class _Display:
    """A rich Progress whose tasks mirror the running phases at every redraw."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[int, tuple[Phase, TaskID]] = {}  # id(phase) -> (phase, its task)

    @classmethod
    def start(cls) -> _Display:
        try:
            from rich import progress as rich_progress
        except ImportError:
            raise SystemExit(MISSING_EXTRA.format(what="--progress")) from None

        displays: list[_Display] = []  # the one display, once made (Progress draws earlier)

        class Mirrored(rich_progress.Progress):
            def get_renderables(self) -> Iterator[Any]:
                for display in displays:
                    display.sync()
                yield from super().get_renderables()

        columns = (
            rich_progress.SpinnerColumn(),
            rich_progress.TextColumn("{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.MofNCompleteColumn(),
            rich_progress.TimeElapsedColumn(),
        )
        display = cls(Mirrored(*columns, transient=True, refresh_per_second=4))
        displays.append(display)
        display.progress.start()
        return display

    def add(self, phase: Phase) -> None:
        task = self.progress.add_task(phase.description, total=phase.total)
        self.tasks[id(phase)] = (phase, task)

    def remove(self, phase: Phase) -> None:
        _, task = self.tasks.pop(id(phase))
        self.progress.remove_task(task)

    def sync(self) -> None:
        for phase, task in list(self.tasks.values()):
            self.progress.update(
                task, description=phase.description, completed=phase.completed, total=phase.total
            )

    def stop(self) -> None:
        self.progress.stop()


def _rich_installed() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _header(benchmark: str, options: argparse.Namespace) -> Record:
    """Everything but the figures: what ran, where, when and on what load."""
    return Record(
        benchmark=benchmark,
        command=list(sys.argv),
        options={
            name: _json_value(value)
            for name, value in vars(options).items()
            if name not in ("json", "progress")
        },
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        commit=_git("rev-parse", "HEAD"),
        commit_dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
        load_average=list(os.getloadavg()),
        python=platform.python_version(),
        figures={},
    )


def _json_value(value: object) -> object:
    """``value`` as JSON keeps it (paths and the like as text), so a record round-trips."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)


def write_record(path: Path, record: Record) -> None:
    """Write ``record`` to ``path`` as indented JSON (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")


def read_record(path: Path) -> Record:
    """A record written by :func:`write_record`; ValueError when it is not one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = set(Record.__annotations__) - set(data) if isinstance(data, dict) else {"all"}
    if missing:
        raise ValueError(f"{path} is not a benchmark record (missing {sorted(missing)})")
    for name, figure in data["figures"].items():
        if not isinstance(figure, dict) or {"value", "unit"} - set(figure):
            raise ValueError(f"{path}: figure {name!r} needs a value and a unit")
    record: Record = data
    return record
