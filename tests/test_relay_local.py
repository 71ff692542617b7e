"""The in-process connection between a host's link and its embedded relay (relay.local)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pycrdt
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from collab_ls.relay_link import LinkStatus
from relay import protocol
from relay.local import MAX_INBOX, LocalConnection, local_pair
from relay.messages import CloseCode
from relay.server import Relay
from tests.relay_helpers import append, files, link, new_room, text, wait_until

Received = tuple[int, bool, bytes]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with Relay() as r:
        yield r


async def _read_all(conn: LocalConnection) -> list[str | bytes]:
    return [data async for data in conn]


# The pair by itself


async def test_messages_pass_in_order_as_the_same_objects() -> None:
    client, server = local_pair("ws://127.0.0.1:1/room?secret=s&ro=r")
    assert server.request is not None and server.request.path == "/room?secret=s&ro=r"
    assert server.remote_address == ("local", 0)
    sent = [bytes([i]) * 3 for i in range(50)]
    for data in sent:
        await client.send(data)
    await server.send(b"back")
    await client.close()
    got = await _read_all(server)
    assert got == sent
    assert all(a is b for a, b in zip(got, sent, strict=True))
    assert await _read_all(client) == [b"back"]
    assert client.close_code == server.close_code == 1000


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_closing_either_end_closes_both_with_its_code_and_reason(closer: str) -> None:
    client, server = local_pair("ws://h:1/r?secret=s")
    this, other = (client, server) if closer == "client" else (server, client)
    reader = asyncio.create_task(_read_all(other))
    await asyncio.sleep(0)
    await this.close(CloseCode.READ_ONLY, "read-only link")
    with pytest.raises(ConnectionClosedError) as info:
        await reader
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.READ_ONLY
    for end in (client, server):
        assert end.close_code == CloseCode.READ_ONLY
        assert end.close_reason == "read-only link"
        with pytest.raises(ConnectionClosed):
            await end.send(b"late")
        with pytest.raises(ConnectionClosed):
            await end.ping()
    async with asyncio.timeout(1):
        await client.wait_closed()
        await server.wait_closed()


async def test_abort_is_a_lost_connection_and_pings_answer_at_once() -> None:
    client, server = local_pair("ws://h:1/r?secret=s")
    pong = await client.ping()
    assert await pong == 0.0
    client.transport.abort()
    assert server.close_code == 1006 and not server.close_reason
    with pytest.raises(ConnectionClosedError):
        await server.recv()


async def test_a_send_waits_while_the_other_end_is_behind() -> None:
    client, server = local_pair("ws://h:1/r?secret=s")
    for _ in range(MAX_INBOX):
        await client.send(b"x")
    blocked = asyncio.create_task(client.send(b"last"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await server.recv()
    async with asyncio.timeout(1):
        await blocked
    # A close wakes a blocked sender, which finds the connection closed.
    blocked = asyncio.create_task(client.send(b"more"))
    await asyncio.sleep(0.01)
    await server.close(CloseCode.SLOW_CONSUMER, "slow")
    with pytest.raises(ConnectionClosedError):
        await blocked


# Through the relay: the host's link in memory, a guest over a websocket


async def test_host_in_memory_and_guest_over_websocket_sync_both_ways(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    host_doc, guest_doc = pycrdt.Doc(), pycrdt.Doc()
    files(host_doc)["a.txt"] = pycrdt.Text("before\n")
    async with link(host_doc, url, connect=relay.connect_local) as host:
        await host.wait_synced(5)
        (conn,) = relay._handler.connections
        assert isinstance(conn, LocalConnection)
        async with link(guest_doc, url) as guest:
            await guest.wait_synced(5)
            # The sync handshake carried what the host had before connecting.
            await wait_until(lambda: text(guest_doc, "a.txt") == "before\n")
            append(host_doc, "a.txt", "host\n")
            await wait_until(lambda: text(guest_doc, "a.txt") == "before\nhost\n")
            with guest_doc.transaction(origin="editor"):
                append(guest_doc, "a.txt", "guest\n")
            await wait_until(lambda: text(host_doc, "a.txt") == "before\nhost\nguest\n")
            assert relay.rooms[room].text("files", "a.txt") == "before\nhost\nguest\n"
            peers = relay.room_info(room)
            assert peers is not None and any("@local:0" in str(p) for p in peers["peers"])
    assert relay.metrics.connections_accepted.value(access="read-write") == 2


async def test_awareness_both_ways_and_removed_when_the_host_link_closes(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    host_doc, guest_doc = pycrdt.Doc(), pycrdt.Doc()
    async with link(guest_doc, url) as guest:
        host = link(host_doc, url, connect=relay.connect_local)
        async with host:
            await host.wait_synced(5)
            await guest.wait_synced(5)
            host.awareness.set_local_state({"user": "host"})
            guest.awareness.set_local_state({"user": "guest"})
            await wait_until(lambda: guest.awareness.states.get(host.client_id) == {"user": "host"})
            await wait_until(
                lambda: host.awareness.states.get(guest.client_id) == {"user": "guest"}
            )
        assert host.status is LinkStatus.CLOSED
        await wait_until(lambda: host.client_id not in guest.awareness.states)
        assert host.client_id not in relay.rooms[room].awareness_states
        await wait_until(
            lambda: not any(isinstance(c, LocalConnection) for c in relay._handler.connections)
        )
        assert len(relay._handler.connections) == 1


async def test_rpc_both_ways_with_the_relays_stamps(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    at_host: list[Received] = []
    at_guest: list[Received] = []
    host_doc, guest_doc = pycrdt.Doc(), pycrdt.Doc()
    host = link(host_doc, url, connect=relay.connect_local, on_rpc=lambda *m: at_host.append(m))
    guest = link(guest_doc, url, on_rpc=lambda *m: at_guest.append(m))
    async with host, guest:
        await host.wait_synced(5)
        await guest.wait_synced(5)
        host.awareness.set_local_state({"user": "host"})
        guest.awareness.set_local_state({"user": "guest"})
        await wait_until(lambda: host.client_id in guest.awareness.states)
        await wait_until(lambda: guest.client_id in host.awareness.states)
        assert host.send_rpc(guest.client_id, b"to guest")
        assert guest.send_rpc(host.client_id, b"to host")
        await wait_until(lambda: bool(at_host and at_guest))
        assert at_guest == [(host.client_id, False, b"to guest")]
        assert at_host == [(guest.client_id, False, b"to host")]


async def test_read_only_link_in_memory_is_refused_a_change(relay: Relay) -> None:
    room, secret = new_room()
    ro_secret = new_room()[1]
    relay.create_room(room, secret, read_only_secret=ro_secret)
    links = relay.links(room, secret, ro_secret)
    assert links.read_only is not None
    conn = await relay.connect_local(links.read_only)
    doc = pycrdt.Doc()
    files(doc)["x"] = pycrdt.Text("nope")
    await conn.send(protocol.encode_sync_update(doc.get_update()))
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionClosedError):
            async for _ in conn:
                pass
    assert conn.close_code == CloseCode.READ_ONLY
    assert conn.close_reason
    assert relay.rooms[room].text("files", "x") is None
    # The read-only link itself keeps its changes local and stays connected.
    ro_doc = pycrdt.Doc()
    async with link(ro_doc, links.read_only, connect=relay.connect_local) as ro:
        await ro.wait_synced(5)
        files(ro_doc)["y"] = pycrdt.Text("local")
        await asyncio.sleep(0.1)
        assert ro.connected and relay.rooms[room].text("files", "y") is None


async def test_wrong_secret_in_memory_is_refused(relay: Relay) -> None:
    room, secret = new_room()
    relay.create_room(room, secret)
    statuses: list[LinkStatus] = []
    bad = relay.url(room, "x" * 22)
    async with link(
        pycrdt.Doc(), bad, connect=relay.connect_local, on_status=lambda s, _: statuses.append(s)
    ) as lk:
        await wait_until(lambda: lk.status is LinkStatus.REFUSED)
    assert LinkStatus.CONNECTED not in statuses


async def test_relay_side_closes_reach_the_link(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc = pycrdt.Doc()
    async with link(doc, url, connect=relay.connect_local) as host:
        await host.wait_synced(5)
        host.awareness.set_local_state({"user": "host"})
        await wait_until(lambda: host.client_id in relay.rooms[room].awareness_states)
        assert relay.remove_peer(room, client_id=host.client_id) == 1
        await wait_until(lambda: host.status is LinkStatus.REFUSED)
        assert "removed" in host.reason
        assert not relay.rooms[room].peers


async def test_stopping_the_relay_disconnects_the_link() -> None:
    room, secret = new_room()
    statuses: list[tuple[LinkStatus, str]] = []
    relay = Relay()
    await relay.start()
    try:
        url = relay.url(room, secret)
        async with link(
            pycrdt.Doc(),
            url,
            connect=relay.connect_local,
            on_status=lambda s, r: statuses.append((s, r)),
        ) as host:
            await host.wait_synced(5)
            async with asyncio.timeout(5):
                await relay.stop()
            await wait_until(lambda: host.status is not LinkStatus.CONNECTED)
            assert (LinkStatus.DISCONNECTED, "relay closed the connection (1001)") in statuses
            assert not relay._local
    finally:
        await relay.stop()
