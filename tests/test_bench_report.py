"""The benchmarks' shared report (benchmarks/report.py) and plotting tool (benchmarks/plot.py),
without a broker: a record written with ``--json`` reads back equal, and plot.py turns
records into a PNG (or says how to install matplotlib when it is missing)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import Report, read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _options(json_path: Path | None) -> argparse.Namespace:
    return argparse.Namespace(json=json_path, progress=False, writes=200, folder=Path("/tmp/x"))


def _record_file(tmp_path: Path) -> Path:
    """A record of three figures (throughput, latency and a CPU figure), as --json writes."""
    path = tmp_path / "node.json"
    with Report("node", _options(path)) as bench:
        with bench.phase("commit latency", total=2) as phase:
            phase.advance(2)
        bench.figure("commit latency p50", 1.8, "ms")
        bench.figure("save, CPU", 250.0, "µs CPU")
        bench.figure("throughput, 1000 in flight", 20_000, "writes/s")
    return path


def test_json_record_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "node.json"
    with Report("node", _options(path)) as bench:
        bench.figure("commit latency p50", 1.8, "ms")
        bench.figure("throughput, 1000 in flight", 20_000, "writes/s")
    written = read_record(path)
    assert written == bench.record()
    assert written["benchmark"] == "node"
    assert written["figures"] == {
        "commit latency p50": {"value": 1.8, "unit": "ms"},
        "throughput, 1000 in flight": {"value": 20_000.0, "unit": "writes/s"},
    }
    assert written["options"] == {"writes": 200, "folder": "/tmp/x"}  # report options left out
    assert written["command"] == sys.argv
    assert len(written["load_average"]) == 3
    assert written["commit"] is None or len(written["commit"]) == 40
    write_record(tmp_path / "again.json", written)  # what was read writes back the same
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_read_record_refuses_what_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"figures": {}}))
    with pytest.raises(ValueError, match="not a benchmark record"):
        read_record(path)


def test_no_json_file_without_the_option(tmp_path: Path) -> None:
    with Report("node", _options(None)) as bench:
        bench.figure("commit latency p50", 1.8, "ms")
    assert list(tmp_path.iterdir()) == []
    assert bench.record()["figures"]["commit latency p50"]["value"] == 1.8


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    record = _record_file(tmp_path)
    output = tmp_path / "plots" / "figures.png"
    done = subprocess.run(
        [sys.executable, "benchmarks/plot.py", str(record), "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = output.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    record = _record_file(tmp_path)
    output = tmp_path / "figures.png"
    # None in sys.modules makes `import matplotlib` fail as if it were not installed.
    script = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['plot.py', {str(record)!r}, '--output', {str(output)!r}]; "
        "runpy.run_path('benchmarks/plot.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "needs the bench extra" in done.stderr
    assert "pip install -e '.[bench]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not output.exists()


def test_progress_display_keeps_the_printed_text(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="the bench extra is not installed")
    options = argparse.Namespace(json=None, progress=True)
    with Report("core_throughput", options) as bench, bench.phase("runs", total=2) as runs:
        for batch in (1, 16):
            runs.describe(f"batch {batch}")
            runs.advance()
            print(f"{batch:>6} done")
    out = capsys.readouterr().out
    assert "     1 done" in out
    assert "    16 done" in out
    assert runs.completed == 2
