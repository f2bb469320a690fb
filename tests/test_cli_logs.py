"""`raftmq node --log-format text|json`: every line carries the node's id, term and role,
DEBUG is raftmq's own and not the AMQP library's frames, and secrets are masked."""

from __future__ import annotations

import json
import logging
import signal

import pytest

from raftmq.cli.errors import add_secret, mask
from raftmq.cli.logs import TEXT_FORMAT, JsonLines, MaskedText, NodeContext
from raftmq.core.types import Role, SoftState
from raftmq.testing.localcluster import wait_for_leader
from tests.conftest import ClusterFactory


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("raftmq.node.loop", logging.INFO, __file__, 1, message, args, None)


def test_a_line_names_the_node_term_and_role_it_was_logged_in() -> None:
    context = NodeContext()
    context.node_id = "n2"
    before = _record("opened")
    context.filter(before)
    context.observe(SoftState(Role.LEADER, "n2", 7))
    after = _record("leading")
    context.filter(after)
    text = MaskedText(TEXT_FORMAT)
    assert "[n2 t- starting] raftmq.node.loop: opened" in text.format(before)
    assert "[n2 t7 leader] raftmq.node.loop: leading" in text.format(after)
    line = json.loads(JsonLines().format(after))
    assert (line["node_id"], line["term"], line["role"], line["leader"]) == (
        "n2",
        7,
        "leader",
        "n2",
    )
    assert (line["logger"], line["message"], line["level"]) == (
        "raftmq.node.loop",
        "leading",
        "INFO",
    )


def test_passwords_and_the_cluster_key_are_masked_in_log_lines() -> None:
    key = "k" * 40
    add_secret(key)
    record = _record("store %s, key %s", "postgresql+asyncpg://app:hunter22@db:5432/raft", key)
    for formatter in (MaskedText(TEXT_FORMAT), JsonLines()):
        NodeContext().filter(record)
        out = formatter.format(record)
        assert "hunter22" not in out and key not in out, out
        assert "app:***@db:5432" in out, out
    # No password: unchanged. (Not "guest": the masked texts are the process's, and an
    # earlier command run in this test process may have added guest:guest's password.)
    assert mask("amqp://a-user-of-no-test@host/") == "amqp://a-user-of-no-test@host/"


@pytest.mark.integration
async def test_json_logs_of_a_node_at_debug(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster(
        ["n1"], extra_env={"RAFTMQ_LOG_FORMAT": "json", "RAFTMQ_LOG_LEVEL": "DEBUG"}
    )
    cluster.start_all()
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
    cluster.kill("n1", signal.SIGTERM)
    assert cluster.processes["n1"].returncode == 0
    lines = [json.loads(text) for text in cluster.log_file("n1").read_text().splitlines()]
    assert lines, "no log line"
    assert all(line["node_id"] == "n1" for line in lines)
    # Once the loop runs, every line knows the term and the role.
    running = lines[next(i for i, line in enumerate(lines) if line["term"] is not None) :]
    assert all(line["term"] is not None and line["role"] for line in running)
    assert any(
        line["role"] == "leader" and line["term"] == leader.term and "stopping" in line["message"]
        for line in running
    ), running[-3:]
    # DEBUG is raftmq's: the AMQP libraries stay at WARNING.
    assert not [
        line
        for line in lines
        if line["logger"].startswith(("aiormq", "aio_pika")) and line["level"] in ("DEBUG", "INFO")
    ]
