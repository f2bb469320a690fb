"""Node settings: pydantic-settings, from (highest first) arguments, ``RAFTMQ_*`` environment
variables, an optional TOML file, then the defaults below.

The TOML file is named by ``RAFTMQ_CONFIG`` (or ``--config`` on the CLI) and holds the same
keys at top level, e.g.::

    cluster = "orders"
    node_id = "n1"
    peers = ["n2", "n3"]
    amqp_url = "amqp://guest:guest@127.0.0.1:5672/"
    cluster_key_file = "/etc/raftmq/cluster.key"

A key the file or the environment does not know (a typo such as ``peer``) is an error, and
so is a named TOML file that does not exist: a setting that is silently ignored is worse
than a node that does not start. A ``RAFTMQ_*`` variable that is neither a setting nor
one of raftmq's other variables (:data:`OTHER_VARIABLES`) is reported by
:func:`unknown_variables` and logged as a warning at start, with the nearest known names
by ``raftmq node`` (like etcd's "unrecognized environment variable"): it could be another
program's, so it does not stop the node. An embedded node that reads its settings from
the environment can do the same.

Bootstrapping is explicit: a node needs its ``peers``; a cluster of one node only with
``single_node`` (``--single-node``, ``RAFTMQ_SINGLE_NODE``). A node that forgot its peers
must not run as a cluster of its own, lead the writes queue and acknowledge writes the
real cluster never sees.

Brokers: ``amqp_url`` holds one RabbitMQ URL or several (``RAFTMQ_AMQP_URL`` comma-separated,
or a TOML list), the nodes of one RabbitMQ cluster; with ``amqps://`` URLs the files of
``amqp_ca_file``, ``amqp_cert_file`` and ``amqp_key_file`` (or aiormq's ``cafile``,
``certfile``, ``keyfile`` in each URL's query). :func:`raftmq.runtime.build_node` checks
them before connecting (see :mod:`raftmq._amqp.connect` and docs/operations.md, "TLS and
broker clusters").

Metrics and health are off by default: with ``metrics_port`` (``RAFTMQ_METRICS_PORT``)
``raftmq node`` serves ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` on
``metrics_host`` (``127.0.0.1`` unless said: ``0.0.0.0`` to be scraped from elsewhere); see
:mod:`raftmq.node.metrics_server` and docs/metrics.md.

Node traffic is signed with the cluster key (:mod:`raftmq.protocol.auth`): the key file
``cluster_key_file`` (``RAFTMQ_CLUSTER_KEY_FILE``) or, for tests, the key itself in
``RAFTMQ_CLUSTER_KEY``. Without one a node starts only with ``insecure`` (``--insecure``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from raftmq.core.config import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ENTRIES,
    DEFAULT_MAX_CACHED_ENTRIES,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_SNAPSHOT_CHUNK_BYTES,
    DEFAULT_TRAILING_ENTRIES,
    RaftConfig,
)
from raftmq.core.messages import MAX_SNAPSHOT_CHUNK
from raftmq.errors import ConfigError
from raftmq.node.retention import Retention
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import snapshot_chunk_body_bytes

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_TICK_INTERVAL = 0.05
_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class NodeSettings(BaseSettings):
    """Everything one node needs to run. Invariant: node_id is not in peers (unless it
    joins: then peers are the bootstrap voters, which may name it)."""

    model_config = SettingsConfigDict(env_prefix="RAFTMQ_", extra="forbid")

    cluster: str = Field("raftmq", pattern=_NAME_PATTERN)  # names every AMQP object
    node_id: str = Field(pattern=_NAME_PATTERN)  # this node's id, unique in the cluster
    peers: Annotated[list[str], NoDecode] = Field(default_factory=list)  # the other voters
    # RabbitMQ URL, or several (the nodes of one RabbitMQ cluster) comma-separated or as
    # a TOML list: connect and every reconnect try the next one (raftmq._amqp.connect)
    amqp_url: Annotated[str, NoDecode] = DEFAULT_AMQP_URL
    amqp_ca_file: Path | None = None  # amqps://: the CA of the brokers' certificates
    amqp_cert_file: Path | None = None  # amqps://: this node's client certificate (PEM)
    amqp_key_file: Path | None = None  # amqps://: its private key (PEM; or in the cert file)
    database_url: str | None = None  # SQLAlchemy URL; default: SQLite file in data_dir
    data_dir: Path = Path(".")  # where the default SQLite file lives
    durability: Literal["full", "normal"] = "full"  # SQLite synchronous=FULL or NORMAL
    tick_interval: float = Field(DEFAULT_TICK_INTERVAL, gt=0, le=10)  # seconds per core tick
    election_ticks: int = Field(DEFAULT_ELECTION_TICKS, gt=1)  # election timeout, in ticks
    heartbeat_ticks: int = Field(DEFAULT_HEARTBEAT_TICKS, gt=0)  # heartbeat interval, in ticks
    max_batch_entries: int = Field(DEFAULT_MAX_BATCH_ENTRIES, gt=0)  # entries per AppendEntries
    max_batch_bytes: int = Field(DEFAULT_MAX_BATCH_BYTES, gt=0)  # bytes per AppendEntries
    max_inflight: int = Field(DEFAULT_MAX_INFLIGHT, gt=0)  # AppendEntries in flight per peer
    max_cached_entries: int = Field(DEFAULT_MAX_CACHED_ENTRIES, gt=0)  # applied entries in memory
    max_message_bytes: int = Field(8 << 20, gt=0)  # larger inbound messages are dropped
    max_write_bytes: int = Field(1 << 20, gt=0)  # larger writes are refused
    # applied entries between two snapshots (then the log is compacted); 0: never
    snapshot_entries: int = Field(0, ge=0)  # 0: no snapshots (opt-in; docs/core.md)
    trailing_entries: int = Field(DEFAULT_TRAILING_ENTRIES, ge=0)  # log kept before a snapshot
    # Retention (docs/core.md): the log kept for replay; older entries are compacted.
    retain_entries: int = Field(0, ge=0)  # the newest N entries; 0: no bound by count
    retain_bytes: int = Field(0, ge=0)  # the newest entries of N payload bytes; 0: no bound
    retain_age: float = Field(0.0, ge=0)  # entries saved in the last N seconds; 0: no bound
    # state bytes per InstallSnapshot; its message must fit max_message_bytes
    snapshot_chunk_bytes: int = Field(DEFAULT_SNAPSHOT_CHUNK_BYTES, gt=0, le=MAX_SNAPSHOT_CHUNK)
    write_timeout: float = Field(30.0, gt=0)  # seconds a write may wait for its commit
    # seconds a leader told to stop waits for another voter to take over (docs/core.md,
    # "Graceful handover"); default: 3 longest election timeouts; 0: stop without handover
    handover_timeout: float | None = Field(None, ge=0)
    allow_fault_injection: bool = False  # serve "isolate"/"rejoin" requests (chaos tests only)
    queue_services: bool = True  # run ingest, fan-out and replay beside the node
    session_expiry_entries: int = Field(1_000_000, gt=0)  # idle client sessions expire after
    max_session_gap: int = Field(10_000, gt=0)  # missing seqs tolerated per producer session
    write_content_types: Annotated[list[str], NoDecode] = Field(default_factory=list)  # or any
    write_schema: str | None = None  # "module:Model": writes must validate, else dead-lettered
    ingest_prefetch: int = Field(2000, gt=0)  # unacked writes the leader holds at once
    # `raftmq node` only: "auto" runs on uvloop when it is installed (a dependency except
    # on Windows), "asyncio" on the standard loop; embedding services keep their own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    cluster_key_file: Path | None = None  # file holding the cluster key (node traffic MAC)
    cluster_key: SecretStr | None = None  # the key itself (tests); never logged
    insecure: bool = False  # run without a cluster key: anyone on the broker can forge traffic
    single_node: bool = False  # no peers on purpose: a cluster of this node alone
    # Start outside the cluster: peers are the voters the cluster was bootstrapped with,
    # and this node waits until `raftmq members add` makes it a learner or a voter.
    join: bool = False
    # `raftmq node` only: serve /metrics, /healthz, /readyz on this port (off when None)
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = Field("127.0.0.1", min_length=1)  # the address metrics listen on

    @field_validator("write_content_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("amqp_url", mode="before")
    @classmethod
    def _join_urls(cls, value: object) -> object:
        # TOML and Python may give a list of URLs; the setting keeps them comma-separated
        if isinstance(value, list | tuple):
            return ",".join(str(url).strip() for url in value)
        return value

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: object) -> object:
        # env vars and flags give "n2,n3"; TOML and Python give a list
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> NodeSettings:
        if self.node_id in self.peers and not self.join:
            # (with join, peers are the bootstrap voters: a node that was removed and
            # comes back under its id, e.g. with a new disk, is among them)
            raise ValueError(f"peers must not contain node_id {self.node_id!r}")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"peers contain duplicates: {self.peers!r}")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be smaller than election_ticks")
        body = snapshot_chunk_body_bytes(self.snapshot_chunk_bytes)
        if body > self.max_message_bytes:
            raise ValueError(
                f"an InstallSnapshot of snapshot_chunk_bytes={self.snapshot_chunk_bytes} takes "
                f"up to {body} bytes, more than max_message_bytes={self.max_message_bytes}: "
                "lower the chunk or raise the bound"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RAFTMQ_CONFIG")
        if config_file:
            sources.append(_toml_source(settings_cls, Path(config_file)))
        return tuple(sources)

    def load_cluster_key(self) -> ClusterKey | None:
        """The cluster key of these settings; None only when ``insecure``. Raises
        ConfigError when there is none (and not ``insecure``), when both ways of giving
        it are used, or when the file cannot be read or holds too short a key."""
        key = cluster_key_from(self.cluster_key, self.cluster_key_file)
        if key is None and not self.insecure:
            raise ConfigError(
                "no cluster key: set cluster_key_file (RAFTMQ_CLUSTER_KEY_FILE, a file of "
                "at least 16 random bytes) or run the node with --insecure"
            )
        if key is not None and self.insecure:
            raise ConfigError("insecure is set together with a cluster key: choose one")
        return key

    def check_voters(self) -> None:
        """Raise ConfigError unless the voter set is explicit: peers, or ``single_node``
        without peers."""
        if not self.peers and not self.single_node:
            raise ConfigError(
                f"no --peers: node {self.node_id} of cluster {self.cluster} needs the other "
                "voters (--peers n2,n3, RAFTMQ_PEERS, or peers = [...] in the config file); "
                "for a cluster of this node alone, say so with --single-node "
                "(RAFTMQ_SINGLE_NODE=true)"
            )
        if self.peers and self.single_node:
            raise ConfigError(
                f"--single-node is set together with --peers {','.join(self.peers)}: choose one"
            )
        if self.join and not self.peers:
            raise ConfigError(
                f"--join needs --peers: the voters cluster {self.cluster} was bootstrapped with"
            )

    def check_data_dir(self) -> None:
        """Raise ConfigError when the default SQLite file of this node is missing from
        ``data_dir`` but files of other nodes of this cluster are there: the data dir of
        another node, which this node must not join with an empty database."""
        if self.database_url:
            return
        own = self.data_dir / f"raftmq-{self.cluster}-{self.node_id}.db"
        if own.exists():
            return
        prefix = f"raftmq-{self.cluster}-"
        others = sorted(
            path.name
            for path in self.data_dir.glob(f"{prefix}*.db")
            if re.fullmatch(_NAME_PATTERN, path.name[len(prefix) : -len(".db")])
        )
        if others:
            raise ConfigError(
                f"the data dir {self.data_dir} holds the databases of other nodes of cluster "
                f"{self.cluster} ({', '.join(others)}) and none of node {self.node_id} "
                f"({own.name}): is --data-dir (or --node-id) wrong? Give each node its own "
                "data dir; nothing was changed"
            )

    @property
    def voters(self) -> tuple[str, ...]:
        """The seed voter set, sorted (the same on every node): the configuration until
        the log holds another one; without this node when it joins."""
        if self.join:
            return tuple(sorted(set(self.peers)))
        return tuple(sorted({self.node_id, *self.peers}))

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/raftmq-<cluster>-<node_id>.db``."""
        if self.database_url:
            return self.database_url
        path = (self.data_dir / f"raftmq-{self.cluster}-{self.node_id}.db").resolve()
        return f"sqlite+aiosqlite:///{path}"

    def retention(self) -> Retention:
        """The retention bounds these settings describe."""
        return Retention(self.retain_entries, self.retain_bytes, self.retain_age)

    def raft_config(self) -> RaftConfig:
        """The core configuration these settings describe (validated)."""
        return RaftConfig(
            node_id=self.node_id,
            voters=self.voters,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_batch_entries=self.max_batch_entries,
            max_batch_bytes=self.max_batch_bytes,
            max_inflight=self.max_inflight,
            max_cached_entries=self.max_cached_entries,
            trailing_entries=self.trailing_entries,
            snapshot_chunk_bytes=self.snapshot_chunk_bytes,
        ).validate()


def cluster_key_from(key: SecretStr | str | None, key_file: Path | None) -> ClusterKey | None:
    """The key given as text or as a file (None when neither is given); ConfigError when
    both are given, or the file cannot be read, or the key is shorter than 16 bytes."""
    if key is not None and key_file is not None:
        raise ConfigError("give the cluster key or the cluster key file, not both")
    if key_file is not None:
        try:
            data = key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the cluster key file {key_file}: {exc}") from None
        return ClusterKey.from_file_bytes(data)
    if key is None:
        return None
    return ClusterKey.from_text(key.get_secret_value() if isinstance(key, SecretStr) else key)


OTHER_VARIABLES = frozenset(
    {
        "RAFTMQ_CONFIG",  # the TOML file
        "RAFTMQ_NODES",  # operator commands: the nodes to ask
        "RAFTMQ_RABBITMQCTL",  # `raftmq permissions`
        "RAFTMQ_LOG_LEVEL",  # `raftmq node`
        "RAFTMQ_LOG_FORMAT",  # `raftmq node`: text or json
        "RAFTMQ_NODE_PASSWORD",
        "RAFTMQ_PRODUCER_PASSWORD",
        "RAFTMQ_SUBSCRIBER_PASSWORD",
        # the test suite's and benchmarks'
        "RAFTMQ_TEST_AMQP_URL",
        "RAFTMQ_TEST_DATABASE_URL",
        "RAFTMQ_REQUIRE_SERVICES",
        "RAFTMQ_HYPOTHESIS_PROFILE",
        "RAFTMQ_FUZZ_EXAMPLES",
        "RAFTMQ_SAFETY_SEEDS",
        "RAFTMQ_SAFETY_SEED",
        "RAFTMQ_CRASH_SEED",
        "RAFTMQ_CRASH_KILLS",
        "RAFTMQ_RETENTION_WRITES",
    }
)
"""``RAFTMQ_*`` variables that are raftmq's without being node settings."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``RAFTMQ_*`` variable of ``environ`` that raftmq does not know (a
    misspelt setting, most likely), naming the nearest known names."""
    prefix = "RAFTMQ_"
    known = {prefix + name.upper() for name in NodeSettings.model_fields} | OTHER_VARIABLES
    lines = []
    for name in sorted(environ):
        if name.upper().startswith(prefix) and name.upper() not in known:
            near = difflib.get_close_matches(name.upper(), sorted(known), n=3, cutoff=0.75)
            hint = f" (did you mean {' or '.join(near)}?)" if near else ""
            lines.append(f"unrecognized environment variable {name}{hint}")
    return lines


class _CheckedToml(TomlConfigSettingsSource):
    """A TOML source whose file must exist and parse (errors name the file)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            with file_path.open("rb") as stream:
                return tomllib.load(stream)
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {file_path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the config file {file_path} is not valid TOML: {exc}") from None


def _toml_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise ConfigError(f"the config file {path} does not exist")
    return _CheckedToml(settings_cls, toml_file=path)
