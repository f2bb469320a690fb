"""RpcClient and AdminClient without a broker: what they say before they were started."""

from __future__ import annotations

import pytest

from raftmq.client.admin import AdminClient
from raftmq.errors import ClientNotOpen
from raftmq.transport.rpc import RpcClient


async def test_an_admin_client_used_before_start_raises_client_not_open() -> None:
    """A client that was never started says so, with the error every raftmq client
    raises for that (not a TransportError about the broker)."""
    admin = AdminClient(RpcClient("amqp://guest:guest@127.0.0.1:1/", "c"), ["n1"])
    with pytest.raises(ClientNotOpen):
        await admin.status("n1")
