"""`raftmq permissions print|apply`: the broker permission layout of a cluster as
``rabbitmqctl`` commands (:mod:`raftmq.protocol.permissions`), printed for an operator to
review, or run against the broker node that ``rabbitmqctl`` reaches.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Annotated

import typer

from raftmq.cli.options import ClusterOpt, fail
from raftmq.errors import ConfigError
from raftmq.protocol.permissions import Grant, Role, layout

permissions_app = typer.Typer(
    help="Broker accounts and permissions of a cluster (node, producer, subscriber).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, like the other commands (no `<bool>` beside flags)
)

VhostOpt = Annotated[str, typer.Option("--vhost", help="RabbitMQ virtual host.")]
NodeUserOpt = Annotated[str, typer.Option("--node-user", help="Account of the nodes.")]
ProducerUserOpt = Annotated[str, typer.Option("--producer-user", help="Account of producers.")]
SubscriberUserOpt = Annotated[
    str, typer.Option("--subscriber-user", help="Account of subscribers.")
]
RabbitmqctlOpt = Annotated[
    str,
    typer.Option(
        "--rabbitmqctl",
        envvar="RAFTMQ_RABBITMQCTL",
        help="The rabbitmqctl command, with options such as '-n rabbit@host'.",
    ),
]

PASSWORD_ENV = {role: f"RAFTMQ_{role.value.upper()}_PASSWORD" for role in Role}
"""Where `apply` reads the password of an account it has to create."""


@dataclass(frozen=True, slots=True)
class Account:
    """One broker user and the grant it gets."""

    user: str
    grant: Grant


def accounts(cluster: str, node: str, producer: str, subscriber: str) -> list[Account]:
    """The accounts of the layout; one user may not hold two roles (that would merge
    their permissions, and a producer would get a node's)."""
    users = {Role.NODE: node, Role.PRODUCER: producer, Role.SUBSCRIBER: subscriber}
    if len(set(users.values())) != len(users):
        raise ConfigError("the node, producer and subscriber accounts must be three users")
    return [Account(users[grant.role], grant) for grant in layout(cluster)]


def commands(vhost: str, layout_accounts: list[Account]) -> list[list[str]]:
    """The rabbitmqctl arguments that set the layout (users must exist)."""
    return [
        [
            "set_permissions",
            "-p",
            vhost,
            account.user,
            account.grant.configure,
            account.grant.write,
            account.grant.read,
        ]
        for account in layout_accounts
    ]


@permissions_app.command("print")
def print_layout(
    cluster: ClusterOpt = "raftmq",
    vhost: VhostOpt = "/",
    node_user: NodeUserOpt = "raftmq-node",
    producer_user: ProducerUserOpt = "raftmq-producer",
    subscriber_user: SubscriberUserOpt = "raftmq-subscriber",
) -> None:
    """Print the rabbitmqctl commands that create the accounts and set their permissions."""
    try:
        layout_accounts = accounts(cluster, node_user, producer_user, subscriber_user)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    lines = [f"# broker accounts of raftmq cluster {cluster!r} on vhost {vhost!r}"]
    for account in layout_accounts:
        env = PASSWORD_ENV[account.grant.role]
        lines.append(f'rabbitmqctl add_user {shlex.quote(account.user)} "${env}"')
    lines.extend("rabbitmqctl " + shlex.join(args) for args in commands(vhost, layout_accounts))
    typer.echo("\n".join(lines))


@permissions_app.command("apply")
def apply_layout(
    cluster: ClusterOpt = "raftmq",
    vhost: VhostOpt = "/",
    node_user: NodeUserOpt = "raftmq-node",
    producer_user: ProducerUserOpt = "raftmq-producer",
    subscriber_user: SubscriberUserOpt = "raftmq-subscriber",
    rabbitmqctl: RabbitmqctlOpt = "rabbitmqctl",
) -> None:
    """Create the missing accounts (passwords from RAFTMQ_NODE_PASSWORD,
    RAFTMQ_PRODUCER_PASSWORD, RAFTMQ_SUBSCRIBER_PASSWORD) and set their permissions."""
    try:
        layout_accounts = accounts(cluster, node_user, producer_user, subscriber_user)
        ctl = _Rabbitmqctl(rabbitmqctl)
        existing = ctl.users()
        for account in layout_accounts:
            if account.user not in existing:
                env = PASSWORD_ENV[account.grant.role]
                password = os.environ.get(env)
                if not password:
                    raise ConfigError(f"user {account.user!r} does not exist: set {env}")
                ctl.run(["add_user", account.user, password], secret=password)
                typer.echo(f"created user {account.user}")
        for args in commands(vhost, layout_accounts):
            ctl.run(args)
            typer.echo(f"{args[3]}: configure {args[4]}  write {args[5]}  read {args[6]}")
    except ConfigError as exc:
        raise fail(str(exc)) from None


class _Rabbitmqctl:
    """Runs rabbitmqctl; a failure becomes a ConfigError naming the command (never a
    password)."""

    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)
        if not self.argv or shutil.which(self.argv[0]) is None:
            raise ConfigError(f"{command!r} not found (set --rabbitmqctl)")

    def run(self, args: list[str], *, secret: str | None = None) -> str:
        done = subprocess.run(
            [*self.argv, "-q", *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            shown = " ".join("***" if arg == secret else arg for arg in args)
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ConfigError(f"rabbitmqctl {shown} failed: {detail[-1] if detail else '?'}")
        return done.stdout

    def users(self) -> set[str]:
        listed = json.loads(self.run(["--formatter", "json", "list_users"]) or "[]")
        return {entry["user"] for entry in listed}
