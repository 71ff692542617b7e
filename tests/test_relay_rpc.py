"""RPC messages (type 100) through a real relay: wire format, routing, stamps, limits, scale-out."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import LinkStatus, RelayLink
from relay import protocol
from relay.links import new_room_id, new_secret
from relay.messages import AwarenessEntry, MessageType, RpcDelivery, RpcFlags, RpcSend
from relay.protocol import MAX_VAR_UINT, ProtocolError, parse_message
from relay.redis_store import RedisStore
from relay.server import Relay
from tests.relay_helpers import files, new_room, text, wait_until

Received = tuple[int, bool, bytes]

# The wire format


@settings(max_examples=300, deadline=None)
@given(to=st.integers(0, MAX_VAR_UINT), payload=st.binary(max_size=2048))
def test_rpc_send_round_trips(to: int, payload: bytes) -> None:
    message = protocol.encode_rpc(to, payload)
    assert parse_message(message) == RpcSend(to, payload)
    assert message[0] == 100 == int(MessageType.RPC)


@settings(max_examples=300, deadline=None)
@given(
    sender=st.integers(0, MAX_VAR_UINT),
    flags=st.integers(0, MAX_VAR_UINT),
    payload=st.binary(max_size=2048),
)
def test_rpc_delivery_round_trips(sender: int, flags: int, payload: bytes) -> None:
    message = protocol.encode_rpc_delivery(sender, flags, payload)
    parsed = parse_message(message, from_relay=True)
    assert parsed == RpcDelivery(sender, RpcFlags(flags), payload)
    assert isinstance(parsed, RpcDelivery)
    assert int(parsed.flags) == flags  # unknown bits are kept
    assert parsed.read_only == bool(flags & 1)


@settings(max_examples=100, deadline=None)
@given(to=st.integers(0, MAX_VAR_UINT), payload=st.binary(max_size=64))
def test_every_truncation_of_an_rpc_message_is_an_error(to: int, payload: bytes) -> None:
    for message, from_relay in (
        (protocol.encode_rpc(to, payload), False),
        (protocol.encode_rpc_delivery(to, RpcFlags.READ_ONLY, payload), True),
    ):
        for cut in range(1, len(message)):
            with pytest.raises(ProtocolError):
                parse_message(message[:cut], from_relay=from_relay)
        with pytest.raises(ProtocolError, match="trailing"):
            parse_message(message + b"\x00", from_relay=from_relay)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x64", "truncated message: rpc recipient ends at byte 1"),
        (b"\x64\x00", "truncated message: length of rpc payload"),
        (b"\x64\x00\x05ab", "rpc payload at byte 2 claims 5 bytes, only 2 left"),
        (b"\x64\x80", "unterminated varint for rpc recipient"),
        (b"\x64\x00\x01ab", "1 trailing bytes"),
    ],
)
def test_rpc_parse_errors(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_message(data)


def test_rpc_encoders_refuse_what_is_not_a_varuint() -> None:
    with pytest.raises(ValueError, match="to must be"):
        protocol.encode_rpc(-1, b"")
    with pytest.raises(ValueError, match="to must be"):
        protocol.encode_rpc(MAX_VAR_UINT + 1, b"")
    with pytest.raises(ValueError, match="sender must be"):
        protocol.encode_rpc_delivery(-5, 0, b"")
    # Both directions share the type byte: the reader says which it expects.
    assert parse_message(protocol.encode_rpc_delivery(7, 0, b""), from_relay=True) == (
        RpcDelivery(7, RpcFlags.NONE, b"")
    )
    assert parse_message(protocol.encode_rpc(7, b"x"), from_relay=False) == RpcSend(7, b"x")


# Helpers


class Inbox:
    """An ``on_rpc`` callback that keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    def __call__(self, sender: int, read_only: bool, payload: bytes) -> None:
        self.received.append((sender, read_only, payload))

    def payloads(self) -> list[bytes]:
        return [p for _, _, p in self.received]


def link(doc: pycrdt.Doc[Any], url: str, inbox: Inbox | None = None, **kw: Any) -> RelayLink:
    return RelayLink(
        doc, url, origin="remote", backoff_initial=0.05, backoff_max=0.2, on_rpc=inbox, **kw
    )


async def announce(ws: ClientConnection, client_id: int, state: Any, clock: int = 1) -> None:
    entry = AwarenessEntry(client_id, clock, json.dumps(state))
    await ws.send(protocol.encode_awareness(protocol.encode_awareness_update([entry])))


async def next_rpc(ws: ClientConnection, within: float = 5.0) -> RpcDelivery:
    async with asyncio.timeout(within):
        while True:
            message = parse_message(await ws.recv(decode=False), from_relay=True)
            if isinstance(message, RpcDelivery):
                return message


async def closed_with(ws: ClientConnection, within: float = 5.0) -> tuple[int, str]:
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, f"no close frame received: {exc}"
            return exc.rcvd.code, exc.rcvd.reason


async def holders(relay: Relay, room: str, count: int) -> None:
    """Wait until ``count`` peers of the room hold an awareness client id."""
    await wait_until(
        lambda: sum(1 for p in relay.rooms[room].peers if getattr(p, "rpc_sender", 0)) == count
    )


# Routing on one relay


async def test_directed_rpc_reaches_only_its_recipient_with_the_senders_id() -> None:
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        inboxes = [Inbox(), Inbox(), Inbox()]
        docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc(), pycrdt.Doc(), pycrdt.Doc()]
        async with (
            link(docs[0], url, inboxes[0]) as a,
            link(docs[1], url, inboxes[1]) as b,
            link(docs[2], url, inboxes[2]) as c,
        ):
            for lnk in (a, b, c):
                await lnk.wait_synced(5)
            await holders(relay, room, 3)
            assert a.client_id == docs[0].client_id == a.awareness.client_id
            assert a.send_rpc(b.client_id, b'{"id": 1, "method": "hover"}')
            # Then a broadcast: once C has it, C would have had the directed
            # one before it (one connection keeps its order).
            assert a.send_rpc(0, b"end")
            await wait_until(lambda: inboxes[2].payloads() == [b"end"])
            await wait_until(lambda: len(inboxes[1].received) == 2)
            assert inboxes[1].received == [
                (a.client_id, False, b'{"id": 1, "method": "hover"}'),
                (a.client_id, False, b"end"),
            ]
            assert inboxes[2].received == [(a.client_id, False, b"end")]
            # The answer goes back to A only.
            assert b.send_rpc(a.client_id, b'{"id": 1, "result": null}')
            await wait_until(lambda: len(inboxes[0].received) == 1)
            assert inboxes[0].received == [(b.client_id, False, b'{"id": 1, "result": null}')]
            assert inboxes[2].received == [(a.client_id, False, b"end")]
        metrics = relay.metrics
        assert metrics.rpc_messages.value(route="direct") == 2
        assert metrics.rpc_messages.value(route="broadcast") == 1
        assert metrics.messages_in.value(type="rpc") == 3


async def test_broadcast_reaches_every_other_peer_but_not_the_sender() -> None:
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        inboxes = [Inbox(), Inbox(), Inbox()]
        async with (
            link(pycrdt.Doc(), url, inboxes[0]) as a,
            link(pycrdt.Doc(), url, inboxes[1]) as b,
            link(pycrdt.Doc(), url, inboxes[2]) as c,
        ):
            for lnk in (a, b, c):
                await lnk.wait_synced(5)
            await holders(relay, room, 3)
            assert a.send_rpc(0, b"to all")
            await wait_until(lambda: inboxes[1].payloads() == [b"to all"])
            await wait_until(lambda: inboxes[2].payloads() == [b"to all"])
            # B answers A directly: A's first RPC message is that answer, so
            # its own broadcast did not come back to it.
            assert b.send_rpc(a.client_id, b"ack")
            await wait_until(lambda: inboxes[0].received != [])
            assert inboxes[0].received == [(b.client_id, False, b"ack")]
            assert c.connected


async def test_from_is_stamped_by_the_relay_and_cannot_be_forged() -> None:
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        inbox = Inbox()
        async with link(pycrdt.Doc(), url, inbox) as victim:
            await victim.wait_synced(5)
            await holders(relay, room, 1)
            async with connect(url) as raw:
                # Nothing announced yet: from is 0.
                await raw.send(protocol.encode_rpc(victim.client_id, b"anonymous"))
                await wait_until(lambda: len(inbox.received) == 1)
                assert inbox.received[-1] == (0, False, b"anonymous")
                # After announcing 1111 then 2222, it is the latest: 2222.
                await announce(raw, 1111, {"user": "mallory"})
                await announce(raw, 2222, {"user": "mallory 2"})
                await raw.send(protocol.encode_rpc(victim.client_id, b"latest"))
                await wait_until(lambda: len(inbox.received) == 2)
                assert inbox.received[-1] == (2222, False, b"latest")
                # Removing 2222 leaves 1111.
                await announce(raw, 2222, None, clock=2)
                await raw.send(protocol.encode_rpc(victim.client_id, b"after removal"))
                await wait_until(lambda: len(inbox.received) == 3)
                assert inbox.received[-1] == (1111, False, b"after removal")
                # A frame in the relay-to-client form, claiming to come from
                # the victim itself, is not a valid client message.
                forged = protocol.encode_rpc_delivery(victim.client_id, 0, b"from victim")
                await raw.send(forged)
                code, reason = await closed_with(raw)
                assert code == 4400 and "trailing bytes" in reason
            assert [s for s, _, _ in inbox.received] == [0, 2222, 1111]
            assert victim.connected


async def test_the_latest_connection_announcing_an_id_receives_its_messages() -> None:
    """A client reconnecting before the relay noticed its old connection is gone."""
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        async with link(pycrdt.Doc(), url) as sender:
            await sender.wait_synced(5)
            async with connect(url) as old, connect(url) as new:
                await announce(old, 4242, {"user": "zoe"})
                await holders(relay, room, 2)
                await announce(new, 4242, {"user": "zoe"}, clock=2)
                # The relay handled it before forwarding it to the sender.
                await wait_until(lambda: sender.awareness.meta.get(4242, {}).get("clock") == 2)
                assert sender.send_rpc(4242, b"for zoe")
                got = await next_rpc(new)
                assert (got.sender, got.payload) == (sender.client_id, b"for zoe")
                assert sender.send_rpc(0, b"marker")
                first = await next_rpc(old)
                assert first.payload == b"marker"


async def test_read_only_links_send_rpc_and_are_flagged() -> None:
    async with Relay() as relay:
        room, secret = new_room()
        ro_secret = new_secret()
        relay.create_room(room, secret, read_only_secret=ro_secret)
        links = relay.links(room, secret, ro_secret)
        assert links.read_only is not None
        host_inbox, guest_inbox = Inbox(), Inbox()
        statuses: list[LinkStatus] = []
        async with (
            link(pycrdt.Doc(), links.read_write, host_inbox) as host,
            link(
                pycrdt.Doc(),
                links.read_only,
                guest_inbox,
                on_status=lambda s, _: statuses.append(s),
            ) as guest,
        ):
            await host.wait_synced(5)
            await guest.wait_synced(5)
            assert guest.read_only
            await holders(relay, room, 2)
            assert guest.send_rpc(host.client_id, b'{"id": 1, "method": "hover"}')
            await wait_until(lambda: host_inbox.received != [])
            assert host_inbox.received == [(guest.client_id, True, b'{"id": 1, "method": "hover"}')]
            assert host.send_rpc(guest.client_id, b'{"id": 1, "result": "docs"}')
            await wait_until(lambda: guest_inbox.received != [])
            assert guest_inbox.received == [(host.client_id, False, b'{"id": 1, "result": "docs"}')]
            assert guest.connected and statuses.count(LinkStatus.CONNECTED) == 1
        assert relay.metrics.rejected.value(reason="read_only") == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"\x64", "truncated message: rpc recipient"),
        (b"\x64\x00\x05ab", "claims 5 bytes"),
        (b"\x64\x01\x00\xff", "1 trailing bytes"),
        (b"\x64\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00", "too long"),
    ],
    ids=["truncated", "short-payload", "trailing", "huge-recipient"],
)
async def test_malformed_rpc_is_refused_and_the_room_survives(bad: bytes, reason: str) -> None:
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        doc_a: pycrdt.Doc[Any] = pycrdt.Doc()
        doc_b: pycrdt.Doc[Any] = pycrdt.Doc()
        inbox_b = Inbox()
        async with link(doc_a, url) as a, link(doc_b, url, inbox_b) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            await holders(relay, room, 2)
            async with connect(url) as raw:
                await raw.send(bad)
                code, why = await closed_with(raw)
            assert code == 4400
            assert reason in why
            assert relay.metrics.messages_in.value(type="invalid") == 1
            assert relay.metrics.rejected.value(reason="bad_message") == 1
            # Nothing reached the others; the room goes on.
            files(doc_a)["a.txt"] = pycrdt.Text("still here")
            await wait_until(lambda: text(doc_b, "a.txt") == "still here")
            assert a.send_rpc(b.client_id, b"still here")
            await wait_until(lambda: inbox_b.payloads() == [b"still here"])
            assert a.connected and b.connected


async def test_oversize_rpc_is_refused_and_never_delivered() -> None:
    async with Relay(max_message_bytes=4096) as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        inbox = Inbox()
        async with link(pycrdt.Doc(), url, inbox) as target:
            await target.wait_synced(5)
            await holders(relay, room, 1)
            async with connect(url) as raw:
                fits = protocol.encode_rpc(target.client_id, b"x" * 4000)
                assert len(fits) <= 4096
                await raw.send(fits)
                await raw.send(protocol.encode_rpc(target.client_id, b"y" * 5000))
                code, why = await closed_with(raw)
            assert code == 1009
            assert "4096" in why
            await wait_until(lambda: len(inbox.received) == 1)
            await asyncio.sleep(0.1)
            assert inbox.payloads() == [b"x" * 4000]
            assert relay.metrics.rejected.value(reason="too_big") == 1
            assert target.connected


async def test_rpc_counts_against_the_rate_limit() -> None:
    async with Relay(rate_limit=50, rate_burst=20) as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        inbox = Inbox()
        async with link(pycrdt.Doc(), url, inbox) as target:
            await target.wait_synced(5)
            async with connect(url) as flood:
                for i in range(100):
                    await flood.send(protocol.encode_rpc(0, str(i).encode()))
                assert await closed_with(flood) == (4429, "rate limit: more than 50 messages/s")
            await asyncio.sleep(0.1)
            assert 10 <= len(inbox.received) <= 25
            assert target.connected


async def test_send_rpc_never_raises_and_says_when_nothing_was_sent() -> None:
    lonely = link(pycrdt.Doc(), f"ws://127.0.0.1:1/{new_room_id()}?secret={new_secret()}")
    assert not lonely.send_rpc(0, b"not started")
    async with lonely:
        await asyncio.sleep(0.05)
        assert lonely.status is not LinkStatus.CONNECTED
        assert not lonely.send_rpc(0, b"unreachable relay")
    async with Relay() as relay:
        room, secret = new_room()
        async with link(pycrdt.Doc(), relay.url(room, secret)) as a:
            await a.wait_synced(5)
            assert not a.send_rpc(-1, b"bad recipient")
            assert not a.send_rpc(2**64, b"bad recipient")
            assert a.send_rpc(0, b"")
            assert a.connected


async def test_a_failing_on_rpc_callback_does_not_break_the_link() -> None:
    async with Relay() as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        statuses: list[LinkStatus] = []

        def broken(sender: int, read_only: bool, payload: bytes) -> None:
            raise RuntimeError("handler bug")

        async with (
            link(pycrdt.Doc(), url) as a,
            link(pycrdt.Doc(), url, on_status=lambda s, _: statuses.append(s)) as b,
        ):
            await a.wait_synced(5)
            await b.wait_synced(5)
            await holders(relay, room, 2)
            b.on_rpc = broken
            assert a.send_rpc(b.client_id, b"boom")
            await wait_until(lambda: relay.metrics.rpc_messages.value(route="direct") == 1)
            inbox = Inbox()
            b.on_rpc = inbox
            assert a.send_rpc(b.client_id, b"fine")
            await wait_until(lambda: inbox.payloads() == [b"fine"])
            assert b.connected and statuses.count(LinkStatus.CONNECTED) == 1


# Across relay nodes sharing one Redis


def node(redis_url: str, prefix: str) -> Relay:
    return Relay(store=RedisStore(redis_url, prefix=prefix))


def sees(lnk: RelayLink, other: RelayLink) -> bool:
    return other.client_id in lnk.awareness.states


async def test_directed_rpc_reaches_a_peer_on_another_node(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    async with node(redis_url, prefix) as n1, node(redis_url, prefix) as n2:
        inboxes = [Inbox(), Inbox(), Inbox()]
        async with link(pycrdt.Doc(), n1.url(room, rw), inboxes[0]) as a:
            await a.wait_synced(5)
            async with (
                link(pycrdt.Doc(), n2.url(room, rw), inboxes[1]) as b,
                link(pycrdt.Doc(), n2.url(room, rw), inboxes[2]) as c,
            ):
                await b.wait_synced(5)
                await c.wait_synced(5)
                # (Yjs ignores a new client's state at clock 0, the default {}.)
                for lnk, name in ((a, "a"), (b, "b"), (c, "c")):
                    lnk.awareness.set_local_state({"user": name})
                # Awareness crossed both ways: both nodes follow the room's channel.
                await wait_until(lambda: sees(a, b) and sees(a, c) and sees(b, a))
                assert a.send_rpc(b.client_id, b"A to B across nodes")
                await wait_until(lambda: inboxes[1].received != [])
                assert inboxes[1].received == [(a.client_id, False, b"A to B across nodes")]
                # The answer crosses back.
                assert b.send_rpc(a.client_id, b"B to A")
                await wait_until(lambda: inboxes[0].received != [])
                assert inboxes[0].received == [(b.client_id, False, b"B to A")]
                # A broadcast from C reaches B (same node) and A (other node), not C.
                assert c.send_rpc(0, b"C to all")
                await wait_until(lambda: inboxes[0].payloads() == [b"B to A", b"C to all"])
                await wait_until(lambda: inboxes[1].payloads()[-1:] == [b"C to all"])
                assert inboxes[0].received[-1] == (c.client_id, False, b"C to all")
                # Ordered: a burst of directed messages arrives in order.
                for i in range(50):
                    assert a.send_rpc(b.client_id, b"%d" % i)
                expected = [b"%d" % i for i in range(50)]
                await wait_until(lambda: inboxes[1].payloads()[-50:] == expected)
                # A's broadcast after its burst reaches C first of all: none
                # of the directed messages went to C.
                assert a.send_rpc(0, b"marker")
                await wait_until(lambda: inboxes[2].received != [])
                assert inboxes[2].received == [(a.client_id, False, b"marker")]
        assert n1.metrics.rpc_messages.value(route="other_node") == 51
        assert n1.metrics.rpc_messages.value(route="broadcast") == 1
        assert n2.metrics.rpc_messages.value(route="other_node") == 1
        assert n2.metrics.rpc_messages.value(route="broadcast") == 1
        # Delivered on n2: 51 directed messages and A's broadcast; on n1: B's
        # answer and C's broadcast.
        assert n2.metrics.rpc_messages.value(route="from_node") == 52
        assert n1.metrics.rpc_messages.value(route="from_node") == 2
