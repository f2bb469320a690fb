"""The `raftmq` command: settings sources, `db`, and the cluster commands against real
node processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner, Result

from raftmq.cli.app import _run, app
from raftmq.node.settings import NodeSettings, unknown_variables
from raftmq.storage import migrate
from raftmq.testing.localcluster import wait_for_leader
from tests.conftest import ClusterFactory

runner = CliRunner()


def test_settings_come_from_arguments_then_env_then_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'cluster = "fromtoml"\nnode_id = "n1"\npeers = ["n2", "n3"]\ntick_interval = 0.2\n'
    )
    monkeypatch.setenv("RAFTMQ_CONFIG", str(config))
    monkeypatch.setenv("RAFTMQ_TICK_INTERVAL", "0.1")
    settings = NodeSettings(election_ticks=20)
    assert (settings.cluster, settings.node_id, settings.voters) == (
        "fromtoml",
        "n1",
        ("n1", "n2", "n3"),
    )
    assert settings.tick_interval == 0.1  # env beats the file
    assert settings.election_ticks == 20  # arguments beat everything
    monkeypatch.setenv("RAFTMQ_PEERS", "n1,n2")
    with pytest.raises(ValidationError, match="peers must not contain node_id"):
        NodeSettings()


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RAFTMQ_CLUSTER_KEY",
        "RAFTMQ_CLUSTER_KEY_FILE",
        "RAFTMQ_INSECURE",
        "RAFTMQ_CONFIG",
    ):
        monkeypatch.setenv(name, "")  # remembered as unset: `node --config` sets it
        monkeypatch.delenv(name)


def _node(tmp_path: Path, *args: str) -> Result:
    """`raftmq node` in-process, on an address where no broker answers."""
    common = ["--node-id", "n1", "--peers", "n2,n3", "--data-dir", str(tmp_path)]
    return runner.invoke(app, ["node", *common, "--amqp-url", "amqp://g:g@127.0.0.1:1/", *args])


@pytest.mark.usefixtures("no_key_env")
@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ('node_id = "n1"\npeer = ["n2", "n3"]\n', [], "peer"),  # a typo is not ignored
        ('node_id = "n1"\npeers = [\n', [], "not valid TOML"),
        (None, [], "does not exist"),
        ("", ["--cluster-key-file", "/nonexistent/cluster.key"], "cannot read the cluster key"),
        ("", [], "no cluster key"),  # neither a key nor --insecure
        ("", ["--insecure", "--cluster-key-file", __file__], "choose one"),
    ],
    ids=["typo", "bad-toml", "missing-config", "missing-key-file", "no-key", "both"],
)
def test_node_refuses_settings_mistakes_without_a_traceback(
    tmp_path: Path, toml: str | None, args: list[str], message: str
) -> None:
    config = tmp_path / "node.toml"
    if toml is not None:
        config.write_text(toml)
    result = _node(tmp_path, "--config", str(config), *args)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and message in result.output, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, no traceback
    assert not list(tmp_path.glob("*.db"))  # refused before touching a database


@pytest.mark.usefixtures("no_key_env")
def test_a_node_without_peers_refuses_unless_single_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node started without --peers used to run as a cluster of its own: a second leader
    on the writes queue, acknowledging writes the real cluster never saw."""
    monkeypatch.setenv("RAFTMQ_PEERS", "")
    start = ["node", "--node-id", "n1", "--data-dir", str(tmp_path), "--insecure"]
    result = runner.invoke(app, [*start, "--amqp-url", "amqp://g:g@127.0.0.1:1/"])
    assert result.exit_code == 1 and "error: no --peers:" in result.output, result.output
    assert "--single-node" in result.output  # says what to do
    assert isinstance(result.exception, SystemExit)  # a clean exit, no traceback
    both = runner.invoke(app, [*start, "--peers", "n2", "--single-node"])
    assert both.exit_code == 1 and "choose one" in both.output, both.output
    assert not list(tmp_path.glob("*.db"))  # refused before touching a database
    alone = runner.invoke(app, [*start, "--single-node", "--amqp-url", "amqp://g:g@127.0.0.1:1/"])
    assert alone.exit_code == 1 and "cannot connect" in alone.output, alone.output


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """RAFTMQ_PEER=n2,n3 used to be ignored without a word; `raftmq node` now warns first,
    naming RAFTMQ_PEERS, and then refuses to start without peers as before."""
    monkeypatch.delenv("RAFTMQ_PEERS", raising=False)
    monkeypatch.setenv("RAFTMQ_PEER", "n2,n3")
    monkeypatch.setenv("RAFTMQ_WRITE_TIMOUT", "3")
    start = ["node", "--node-id", "n1", "--data-dir", str(tmp_path), "--insecure"]
    with caplog.at_level(logging.WARNING, logger="raftmq.cli.app"):
        result = runner.invoke(app, start)
    assert result.exit_code == 1 and "error: no --peers:" in result.output, result.output
    warned = [r.getMessage() for r in caplog.records if "unrecognized" in r.getMessage()]
    assert warned == [
        "unrecognized environment variable RAFTMQ_PEER (did you mean RAFTMQ_PEERS?): it is ignored",
        "unrecognized environment variable RAFTMQ_WRITE_TIMOUT (did you mean "
        "RAFTMQ_WRITE_TIMEOUT?): it is ignored",
    ]


def test_every_variable_raftmq_reads_is_known() -> None:
    """The settings' variables, and every other RAFTMQ_* name the project's code, tests and
    Makefile read: none of them is reported as unknown."""
    root = Path(__file__).parent.parent
    texts = [
        path.read_text()
        for folder in ("raftmq", "tests", "benchmarks")
        for path in (root / folder).rglob("*.py")
    ] + [(root / "Makefile").read_text(), (root / ".ci" / "run").read_text()]
    used = {m for text in texts for m in re.findall(r"\bRAFTMQ_[A-Z_]*[A-Z]\b", text)}
    used -= {"RAFTMQ_PEER", "RAFTMQ_WRITE_TIMOUT", "RAFTMQ_MIGRATIONS"}  # typos above; a marker
    assert unknown_variables(dict.fromkeys(used, "")) == []


@pytest.mark.usefixtures("no_key_env")
def test_the_data_dir_of_another_node_is_refused(tmp_path: Path) -> None:
    """A node restarted with another node's --data-dir used to create an empty database
    there and rejoin; it is refused, naming the files, and nothing is created."""
    other = tmp_path / "raftmq-raftmq-n2.db"
    other.write_bytes(b"")
    result = _node(tmp_path, "--insecure")
    assert result.exit_code == 1, result.output
    assert "raftmq-raftmq-n2.db" in result.output and "none of node n1" in result.output
    assert isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


@pytest.mark.usefixtures("no_key_env")
def test_short_key_is_refused_and_insecure_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAFTMQ_CLUSTER_KEY", "only-15-bytes!!")
    result = _node(tmp_path)
    assert result.exit_code == 1 and "at least 16" in result.output, result.output
    assert "only-15-bytes" not in result.output  # the key is never printed
    monkeypatch.delenv("RAFTMQ_CLUSTER_KEY")
    with caplog.at_level(logging.WARNING, logger="raftmq"):
        result = _node(tmp_path, "--insecure")
    assert result.exit_code == 1 and "cannot connect" in result.output, result.output
    insecure = [r for r in caplog.records if "INSECURE" in r.getMessage()]
    assert [r.levelno for r in insecure] == [logging.WARNING]


def test_db_upgrade_and_current_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n1.db'}"
    head = migrate.head_revision()
    result = runner.invoke(app, ["db", "current", "--database-url", url])
    assert result.exit_code == 0 and result.output.strip() == f"none (head is {head})"
    assert not (tmp_path / "n1.db").exists()  # looking creates nothing
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0 and result.output.strip() == f"at revision {head}"
    result = runner.invoke(app, ["db", "current", "--database-url", url])
    assert result.output.strip() == f"{head} (head)"


def test_db_upgrade_refuses_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database")
    result = runner.invoke(app, ["db", "upgrade", "--database-url", f"sqlite:///{foreign}"])
    assert result.exit_code == 1
    assert "error:" in result.output
    assert foreign.read_text() == "not a database"


async def _raftmq(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "raftmq",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ),
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


@pytest.mark.integration
async def test_status_write_transfer_and_graceful_stop(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster()
    cluster.start_all()
    unsigned = ["--cluster", cluster.cluster, "--amqp-url", cluster.amqp_url]
    common = [*unsigned, "--cluster-key-file", str(cluster.key_file)]
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
    # Without the key nobody answers, and status says why; the nodes count the drop.
    code, out = await _raftmq("status", *unsigned, "--nodes", "n1", "--timeout", "0.3")
    assert code == 1 and "(no answer)" in out and "no cluster key" in out, out
    code, out = await _raftmq("status", *common, "--nodes", "n1", "--json")
    assert json.loads(out)["n1"]["transport"]["dropped"] == {"unsigned": 1}, out
    code, out = await _raftmq("status", *common, "--nodes", "n1")  # one node reveals all
    assert code == 0, out
    table, _, progress = out.partition("followers of ")
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert set(rows) == {"n1", "n2", "n3"}
    assert [n for n, row in rows.items() if row[1] == "leader"] == [leader.node_id]
    # the leader's view of each follower: match index, lag, replication state
    assert progress.startswith(leader.node_id), out
    followers = {line.split()[0] for line in progress.splitlines()[1:]}
    assert followers == set(cluster.node_ids) - {leader.node_id}, out
    assert all(" match " in line and " lag " in line for line in progress.splitlines()[1:])
    code, out = await _raftmq("status", *common, "--nodes", leader.node_id, "--json")
    status = json.loads(out)[leader.node_id]
    assert set(status["followers"]) == followers and status["first_index"] == 1, out

    code, out = await _raftmq("write", *common, "--nodes", "n1,n2,n3", "hello")
    assert code == 0 and out.startswith("index="), out

    target = next(n for n in cluster.node_ids if n != leader.node_id)
    code, out = await _raftmq("transfer-leadership", *common, "--nodes", "n1", "--to", target)
    assert code == 0 and out.strip() == f"{target} leads", out

    cluster.kill(target, signal.SIGTERM)
    assert cluster.processes[target].returncode == 0
    assert "stopped" in cluster.log_file(target).read_text()


async def test_status_of_an_unknown_cluster_fails_clearly(amqp_url: str) -> None:
    code, out = await _raftmq(
        "status",
        "--cluster",
        "nosuchcluster",
        "--amqp-url",
        amqp_url,
        "--nodes",
        "x",
        "--timeout",
        "0.3",
    )
    assert code == 1
    assert "(no answer)" in out


@pytest.mark.parametrize(
    ("choice", "module"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_node_event_loop_choice(choice: str, module: str) -> None:
    """`raftmq node` runs on uvloop unless told otherwise (uvloop is a dependency here)."""
    pytest.importorskip("uvloop")
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    _run(main(), choice)
    assert seen == [module]
    assert NodeSettings(node_id="n1", event_loop=choice).event_loop == choice


@pytest.mark.usefixtures("no_key_env")
def test_the_metrics_port_flag_reaches_the_settings(tmp_path: Path) -> None:
    """--metrics-port is the RAFTMQ_METRICS_PORT setting: an impossible port is refused
    before anything starts; a taken one is refused when the node binds it."""
    result = _node(tmp_path, "--insecure", "--metrics-port", "70000")
    assert result.exit_code == 1 and "metrics_port" in result.output, result.output
    assert not list(tmp_path.glob("*.db"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = _node(tmp_path, "--insecure", "--metrics-port", port)
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.output, result.output


def test_node_help_names_every_setting() -> None:
    """Most settings have no flag: `raftmq node --help` still names each of them, and
    where they are explained."""
    result = runner.invoke(app, ["node", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in NodeSettings.model_fields:
        assert name in text, name
    assert "docs/settings.md" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--on-compacted", "ignore"], "--on-compacted must be raise or skip"),
        (["--from", "0"], "--from must be latest, earliest or an index >= 1"),
    ],
)
def test_subscribe_refuses_a_bad_option_before_connecting(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["subscribe", "--amqp-url", "amqp://g:g@127.0.0.1:1/", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
