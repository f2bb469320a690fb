"""The README's code blocks, run: every ``python`` block as a script in a subprocess against
the local broker (cluster ``orders`` renamed to one unique to the test), every ``sh`` block
checked for commands that exist (``raftmq <command> --help`` runs and lists each option
the block uses; ``make`` targets are in the Makefile; other programs are on PATH).

A python block is run the way the README presents it:

- a Producer/Subscriber block runs against a 3-node LocalCluster of that name;
- a block that embeds a node (``build_node``) is that node: its peers run as LocalCluster
  processes, and the block runs until it printed its outcome and applied a write sent
  through the cluster, then it is stopped (it serves until stopped, as a service would).

The cluster's queues and exchanges, named subscriptions and node processes are removed
afterwards (the ``local_cluster`` fixture and :func:`_delete_subscriptions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from raftmq.client import Subscriber
from raftmq.protocol.record import Record
from raftmq.testing.localcluster import LocalCluster, wait_for_leader
from tests.conftest import ClusterFactory

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_CLUSTER = '"orders"'  # the cluster name the README's blocks use
README_BROKER = '"amqp://guest:guest@127.0.0.1:5672/"'
SHELL_BUILTINS = frozenset({"export", "cd", "source", "."})
SHELL_OPERATORS = frozenset({"&&", "||", "|", ";", "&"})
REDIRECTIONS = frozenset({">", ">>", "<", "2>", "&>"})
BLOCK_TIMEOUT = 120.0  # seconds a python block may run
WRITTEN = b'{"id": 1}'  # the body the Producer block publishes


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # the line of its opening fence (1-based)
    language: str  # what follows the fence: python, sh ...
    text: str  # its lines

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(*languages: str) -> list[Block]:
    """The README's fenced blocks in ``languages``, in order."""
    blocks: list[Block] = []
    opened: tuple[int, str] | None = None
    lines: list[str] = []
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if opened is None and line.startswith("```"):
            opened, lines = (number, line[3:].strip()), []
        elif opened is not None and line.strip() == "```":
            if opened[1] in languages:
                blocks.append(Block(opened[0], opened[1], "\n".join(lines) + "\n"))
            opened = None
        elif opened is not None:
            lines.append(line)
    return blocks


PYTHON_BLOCKS = readme_blocks("python")
SHELL_BLOCKS = readme_blocks("sh", "bash", "shell")


def test_readme_starts_with_make_demo_and_make_test() -> None:
    first = SHELL_BLOCKS[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert first.line == 3
    assert commands == ["make demo", "make test"]


# -- shell blocks ---------------------------------------------------------------------


def _commands(text: str) -> list[list[str]]:
    """Each simple command of a shell block, as words (comments, operators and
    redirections with their targets left out)."""
    commands: list[list[str]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        skip_next = False
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token in SHELL_OPERATORS:
                if words:
                    commands.append(words)
                words = []
            elif token in REDIRECTIONS:
                skip_next = True
            else:
                words.append(token)
        if words:
            commands.append(words)
    return commands


SHELL_COMMANDS = [
    pytest.param(words, id=f"{block.name} {' '.join(words[:3])}")
    for block in SHELL_BLOCKS
    for words in _commands(block.text)
]


@cache
def _make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))


@cache
def _raftmq_help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "raftmq", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, f"raftmq {' '.join(command)} --help: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("words", SHELL_COMMANDS)
def test_shell_command_exists(words: list[str]) -> None:
    program = words[0]
    if program == "make":
        assert set(words[1:]) <= _make_targets(), f"no such make target: {words[1:]}"
    elif program == "raftmq":
        subcommand = []
        for word in words[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            subcommand.append(word)
        help_text = _raftmq_help(*subcommand)
        options = [word.split("=")[0] for word in words if word.startswith("--")]
        missing = [option for option in options if option not in help_text]
        assert not missing, f"raftmq {' '.join(subcommand)} has no option {missing}"
    else:
        assert program in SHELL_BUILTINS or shutil.which(program), f"{program} not found"


# -- python blocks --------------------------------------------------------------------


def _kind(block: Block) -> str:
    if "build_node(" in block.text:
        return "node"
    if "Producer(" in block.text or "Subscriber(" in block.text:
        return "client"
    raise AssertionError(
        f"{block.name}: a python block tests/test_readme.py does not know how to run; "
        "add its kind to _kind()"
    )


def _script(block: Block, cluster: str, amqp_url: str, folder: Path) -> Path:
    """The block as a script file, using ``cluster`` and the test broker."""
    assert README_CLUSTER in block.text, f"{block.name} does not use cluster {README_CLUSTER}"
    text = block.text.replace(README_CLUSTER, f'"{cluster}"')
    text = text.replace(README_BROKER, repr(amqp_url))
    path = folder / f"readme_{block.line}.py"
    path.write_text(text)
    return path


def _env(amqp_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTMQ_")}
    return env | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "RAFTMQ_AMQP_URL": amqp_url,
    }


async def _delete_subscriptions(block: Block, amqp_url: str, cluster: str) -> None:
    """Delete the queues of the named subscriptions a block opens."""
    for name in re.findall(r'name="([\w-]+)"', block.text):
        await Subscriber.delete_subscription(amqp_url, cluster, name)


async def _run_client_block(
    block: Block, amqp_url: str, local_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """Run a Producer/Subscriber block against a running 3-node cluster: it publishes one
    write, prints its receipt, and the Subscriber then yields that write."""
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=60)
    script = _script(block, cluster.cluster, amqp_url, tmp_path)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=tmp_path,
            env=_env(amqp_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), BLOCK_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert len(lines) == 2, lines
        index, duplicate = lines[0].split()
        assert index.isdigit() and duplicate == "False", lines
        assert lines[1] == f"{index} {WRITTEN!r}"
        assert cluster.crashed() == {}
    finally:
        await _delete_subscriptions(block, amqp_url, cluster.cluster)


async def _read_until(
    stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout: float
) -> re.Match[str]:
    """Read lines from ``stream`` (kept in ``seen``) until one matches ``pattern``."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"output ended before {pattern!r}: {seen}")
            seen.append(raw.decode().rstrip("\n"))
            if found := re.fullmatch(pattern, seen[-1]):
                return found


async def _run_node_block(
    block: Block, amqp_url: str, local_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """Run a block that embeds node ``node_id`` of a cluster whose other voters run as
    LocalCluster processes: it writes (committed, or NotLeader with a hint), and applies a
    write sent through the cluster afterwards."""
    node_id = re.search(r'node_id="([\w-]+)"', block.text)
    peers = re.search(r"peers=\[([^\]]*)\]", block.text)
    assert node_id and peers, f"{block.name}: no node_id or peers"
    peer_ids = re.findall(r'"([\w-]+)"', peers.group(1))
    cluster: LocalCluster = local_cluster([node_id.group(1), *peer_ids])
    for peer in peer_ids:
        cluster.start(peer)
    assert cluster.key_file.exists()  # the block reads cluster.key from its folder
    script = _script(block, cluster.cluster, amqp_url, cluster.workdir)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=cluster.workdir,
        env=_env(amqp_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        outcome = await _read_until(
            process.stdout, r"committed at (\d+)|ask (n\d)", seen, BLOCK_TIMEOUT
        )
        if outcome.group(1):  # the node led: its own write was applied too
            assert f"{outcome.group(1)} id=1 item='book'" in seen
        async with cluster.admin() as admin:
            await wait_for_leader(admin, timeout=60)
            body = b'{"id": 2, "item": "pen"}'
            commit = await admin.write(Record(body, content_type="application/json"), timeout=30)
        await _read_until(process.stdout, rf"{commit.index} id=2 item='pen'", seen, 60)
        assert process.returncode is None, seen
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
    assert cluster.crashed() == {}


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name) for b in PYTHON_BLOCKS])
async def test_python_block_runs(
    block: Block, amqp_url: str, local_cluster: ClusterFactory, tmp_path: Path
) -> None:
    if _kind(block) == "node":
        await _run_node_block(block, amqp_url, local_cluster, tmp_path)
    else:
        await _run_client_block(block, amqp_url, local_cluster, tmp_path)


def test_every_python_block_is_run() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    assert {_kind(block) for block in PYTHON_BLOCKS} == {"node", "client"}
