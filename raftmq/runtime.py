"""The composition root: assemble a production node from settings (SQL storage + AMQP
transport + the node + its leader services). It sits above node/ and services/, the only
module besides cli/ and testing/ that imports both."""

from __future__ import annotations

import importlib
import logging
from typing import Any, TypeVar

from pydantic import BaseModel

from raftmq._amqp.connect import Brokers, TlsFiles
from raftmq.node.node import Node
from raftmq.node.settings import NodeSettings
from raftmq.node.types import OnCommit, OnRecord
from raftmq.storage.sql import SqlStorage
from raftmq.transport.amqp import AmqpTransport
from raftmq.transport.identity import AmqpClusterIdentity

T = TypeVar("T", bound=BaseModel)

logger = logging.getLogger("raftmq.runtime")


def build_node(
    settings: NodeSettings,
    model: type[T],
    *,
    on_commit: OnCommit[T] | None = None,
    on_record: OnRecord | None = None,
) -> Node[T]:
    """A node for ``settings`` (not started: use ``async with`` or ``await node.start()``).

    Raises ConfigError without a cluster key unless ``settings.insecure``, without peers
    unless ``settings.single_node``, for the data dir of another node, for broker URLs or
    TLS files that cannot work (:func:`brokers`), and when the ``metrics_port`` cannot be
    bound (the metrics server binds it here, serves it once the node runs)."""
    settings.check_voters()
    settings.check_data_dir()
    amqp = brokers(settings)
    key = settings.load_cluster_key()
    if key is None:
        logger.warning(
            "INSECURE: node %s of cluster %s runs without a cluster key: its Raft traffic is "
            "not signed, and anyone who can publish to the broker can forge it (votes, "
            "entries, requests). Set cluster_key_file (RAFTMQ_CLUSTER_KEY_FILE) instead.",
            settings.node_id,
            settings.cluster,
        )
    election_ms = settings.tick_interval * settings.election_ticks * 1000
    storage = SqlStorage(
        settings.resolved_database_url(),
        cluster=settings.cluster,
        node_id=settings.node_id,
        durability=settings.durability,
    )
    transport = AmqpTransport(
        amqp,
        settings.cluster,
        settings.node_id,
        key=key,
        # A Raft message older than one election timeout is useless: let the broker drop it.
        message_ttl_ms=max(int(election_ms), 50),
        max_message_bytes=settings.max_message_bytes,
    )
    node = Node(
        config=settings.raft_config(),
        storage=storage,
        transport=transport,
        model=model,
        on_commit=on_commit,
        on_record=on_record,
        tick_interval=settings.tick_interval,
        write_timeout=settings.write_timeout,
        max_write_bytes=settings.max_write_bytes,
        allow_fault_injection=settings.allow_fault_injection,
        session_expiry_entries=settings.session_expiry_entries,
        max_session_gap=settings.max_session_gap,
        snapshot_entries=settings.snapshot_entries,
        retention=settings.retention(),
        handover_timeout=settings.handover_timeout,
        identity=AmqpClusterIdentity(
            amqp,
            settings.cluster,
            settings.voters,
            declare_shared=settings.queue_services,
        ),
    )
    if settings.metrics_port is not None:
        from raftmq.node.metrics_server import MetricsServer

        # The first service: it serves once the loop runs and stops after the others.
        node.add_service(MetricsServer(node, settings.metrics_host, settings.metrics_port))
    if settings.queue_services:
        attach_queue_services(node, settings, amqp)
    else:
        from raftmq.services.write_rules import WriteRules

        schema = load_schema(settings.write_schema) if settings.write_schema else None
        rules = WriteRules(settings.max_write_bytes, tuple(settings.write_content_types), schema)
        node.write_check = rules.admit
    return node


def brokers(settings: NodeSettings) -> Brokers:
    """The broker URLs and TLS files of ``settings``, checked: ConfigError for a URL that
    is not amqp:// or amqps://, a TLS file that does not exist, or TLS files without an
    amqps:// URL (see :mod:`raftmq._amqp.connect`)."""
    tls = TlsFiles(settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file)
    amqp = Brokers.of(settings.amqp_url, tls)
    amqp.check()
    return amqp


def load_schema(path: str) -> type[BaseModel]:
    """The pydantic model named ``"package.module:Name"``."""
    module_name, _, name = path.partition(":")
    model = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"write_schema {path!r} does not name a pydantic model")
    return model


def attach_queue_services(
    node: Node[Any], settings: NodeSettings, amqp: Brokers | None = None
) -> None:
    """Run ingest (leader only), fan-out (leader only) and the replay server with ``node``
    (on ``amqp``, by default the brokers of ``settings``)."""
    if amqp is None:
        amqp = brokers(settings)
    from raftmq.services.fanout import Fanout
    from raftmq.services.ingest import Ingest
    from raftmq.services.replay import ReplayServer

    schema = load_schema(settings.write_schema) if settings.write_schema else None
    host = node.service_host
    ingest = Ingest(
        host,
        amqp,
        prefetch=settings.ingest_prefetch,
        content_types=settings.write_content_types,
        schema=schema,
    )
    node.add_service(ingest)
    # The `write` request is judged by the same rules as the writes queue.
    node.write_check = ingest.admit
    # Fan-out reads what it publishes from storage: never compact past what it published
    # (its watermark, replicated, so a new leader's fan-out resumes from there too).
    node.compaction_floor = lambda: host.fanout_watermark
    node.add_service(Fanout(host, amqp))
    node.add_service(ReplayServer(host, amqp))
