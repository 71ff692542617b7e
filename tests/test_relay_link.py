"""RelayLink against a real relay on loopback: sync, reconnection, refusal, awareness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.server import ServerConnection, serve

from collab_ls.relay_link import (
    LinkStatus,
    RelayLink,
    RelayRefusedError,
    RelayUrlError,
    SyncTimeoutError,
    parse_relay_url,
)
from relay import protocol
from relay.server import Relay
from tests.relay_helpers import REMOTE, append, files, link, new_room, text, wait_until


class StatusLog:
    def __init__(self) -> None:
        self.events: list[tuple[LinkStatus, str]] = []

    def __call__(self, status: LinkStatus, reason: str) -> None:
        self.events.append((status, reason))

    def count(self, status: LinkStatus) -> int:
        return sum(1 for s, _ in self.events if s is status)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with Relay() as r:
        yield r


async def test_two_links_converge_both_ways_and_tag_remote_origin(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
    async with link(doc_a, url) as a, link(doc_b, url) as b:
        await a.wait_synced(5)
        await b.wait_synced(5)
        assert a.connected and b.connected
        files(doc_a)["main.py"] = pycrdt.Text("print('hi')\n")
        await wait_until(lambda: text(doc_b, "main.py") == "print('hi')\n")
        with doc_b.transaction(origin="editor"):
            append(doc_b, "main.py", "x = 1\n")
        await wait_until(lambda: text(doc_a, "main.py") == "print('hi')\nx = 1\n")
        append(doc_a, "main.py", "y = 2\n")
        await wait_until(lambda: text(doc_b, "main.py") == "print('hi')\nx = 1\ny = 2\n")
        assert relay.rooms[room].text("files", "main.py") == "print('hi')\nx = 1\ny = 2\n"


async def test_remote_updates_carry_the_link_origin(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
    seen: list[Any] = []
    files_b = files(doc_b)
    # Keep the subscription referenced: pycrdt drops it when it is collected.
    subscription = files_b.observe_deep(lambda events, txn: seen.append(txn.origin))
    async with link(doc_a, url) as a, link(doc_b, url) as b:
        await a.wait_synced(5)
        await b.wait_synced(5)
        files(doc_a)["a.txt"] = pycrdt.Text("abc")
        await wait_until(lambda: text(doc_b, "a.txt") == "abc")
        assert seen and all(origin == REMOTE for origin in seen)
        # And B's own edits are not tagged, and do reach A.
        seen.clear()
        append(doc_b, "a.txt", "d")
        await wait_until(lambda: text(doc_a, "a.txt") == "abcd")
        assert seen == [None]
    files_b.unobserve(subscription)


async def test_late_joiner_receives_full_state(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc_a = pycrdt.Doc()
    async with link(doc_a, url) as a:
        await a.wait_synced(5)
        for i in range(20):
            files(doc_a)[f"f{i}.txt"] = pycrdt.Text(f"content {i} é😀")
        append(doc_a, "f3.txt", " more")
        await wait_until(lambda: relay.rooms[room].text("files", "f3.txt") == "content 3 é😀 more")
    # A left: the late joiner syncs from the relay's room document alone.
    doc_c = pycrdt.Doc()
    async with link(doc_c, url) as c:
        await c.wait_synced(5)
        assert {k: str(v) for k, v in files(doc_c).items()} == {
            k: str(v) for k, v in files(doc_a).items()
        }


async def test_edits_made_before_connecting_reach_the_relay(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc_a = pycrdt.Doc()
    files(doc_a)["offline.txt"] = pycrdt.Text("written offline")
    doc_b = pycrdt.Doc()
    async with link(doc_a, url) as a, link(doc_b, url) as b:
        await a.wait_synced(5)
        await b.wait_synced(5)
        await wait_until(lambda: text(doc_b, "offline.txt") == "written offline")


async def test_eight_links_joining_a_new_room_at_once_share_one_room(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    docs = [pycrdt.Doc() for _ in range(8)]
    for i, doc in enumerate(docs):
        files(doc)[f"peer{i}.txt"] = pycrdt.Text(f"from peer {i}")
    links = [link(doc, url) for doc in docs]
    await asyncio.gather(*(lk.start() for lk in links))
    try:
        await asyncio.gather(*(lk.wait_synced(5) for lk in links))
        assert list(relay.rooms) == [room]
        assert len(relay.rooms[room].peers) == 8
        expected = {f"peer{i}.txt": f"from peer {i}" for i in range(8)}
        for doc in docs:
            await wait_until(lambda doc=doc: {k: str(v) for k, v in files(doc).items()} == expected)
    finally:
        await asyncio.gather(*(lk.stop() for lk in links))


async def test_wrong_secret_is_refused_and_not_retried(relay: Relay) -> None:
    room, secret = new_room()
    relay.create_room(room, secret)
    statuses = StatusLog()
    doc = pycrdt.Doc()
    async with link(doc, relay.url(room, "not-the-secret"), on_status=statuses) as lk:
        with pytest.raises(RelayRefusedError, match=f"wrong or missing secret for room {room}"):
            await lk.wait_synced(5)
        assert lk.status is LinkStatus.REFUSED
        await asyncio.sleep(0.3)  # several backoff periods: no retry happens
        assert statuses.count(LinkStatus.CONNECTING) == 1
        assert lk.status is LinkStatus.REFUSED
        assert f"wrong or missing secret for room {room}" in lk.reason
    assert statuses.events[-1][0] is LinkStatus.CLOSED
    assert len(relay.rooms[room].peers) == 0


async def test_unreachable_relay_is_reported_and_retried() -> None:
    async with Relay() as r:
        port = r.port
    statuses = StatusLog()
    url = f"ws://127.0.0.1:{port}/room?secret=s"
    async with link(pycrdt.Doc(), url, on_status=statuses) as lk:
        with pytest.raises(SyncTimeoutError, match="not synced"):
            await lk.wait_synced(0.5)
        assert statuses.count(LinkStatus.CONNECTING) >= 2
        reasons = [r for s, r in statuses.events if s is LinkStatus.DISCONNECTED]
        assert reasons and "cannot reach relay at ws://127.0.0.1" in reasons[0]
        assert "secret" not in reasons[0]


def test_parse_relay_url() -> None:
    parsed = parse_relay_url("wss://relay.example:8443/ab%2Fcd?secret=s3cr%C3%A9t&x=1")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.room, parsed.secret) == (
        "wss",
        "relay.example",
        8443,
        "ab/cd",
        "s3cré t".replace(" ", ""),
    )
    assert parse_relay_url("ws://h/r?secret=s").port == 80
    assert "secret" not in parsed.redacted
    for bad, why in [
        ("http://h:1/r?secret=s", "scheme"),
        ("ws://h:1/?secret=s", "no room"),
        ("ws://h:1/r", "no secret"),
        ("ws://h:1/r?secret=", "no secret"),
        ("ws:///r?secret=s", "no host"),
        ("ws://h:99999/r?secret=s", "bad relay URL"),
        ("not a url", "scheme"),
    ]:
        with pytest.raises(RelayUrlError, match=why):
            parse_relay_url(bad)
    with pytest.raises(RelayUrlError):
        RelayLink(pycrdt.Doc(), "ws://h:1/r", origin=REMOTE)


async def test_link_refuses_to_start_twice(relay: Relay) -> None:
    room, secret = new_room()
    lk = link(pycrdt.Doc(), relay.url(room, secret))
    async with lk:
        assert lk.started
        with pytest.raises(Exception, match="already started"):
            await lk.start()
    assert not lk.started
    assert lk.status is LinkStatus.CLOSED


async def test_malformed_messages_from_the_relay_are_skipped() -> None:
    """A hand-written relay sends garbage around a valid handshake."""
    source = pycrdt.Doc()
    files(source)["a.txt"] = pycrdt.Text("intact")
    state = source.get_update()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"\x00\x07\x01")  # unknown sync sub-type
        await ws.send(b"\x00\x02\x20abc")  # truncated update
        await ws.send("text frame")
        await ws.send(protocol.encode_sync_step2(state))
        await ws.send(protocol.encode_sync_update(b"\x05garbage"))  # update that does not decode
        await ws.wait_closed()

    doc = pycrdt.Doc()
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with link(doc, f"ws://127.0.0.1:{port}/r?secret=s") as lk:
            await lk.wait_synced(5)
            await asyncio.sleep(0.1)
            assert lk.connected
            assert text(doc, "a.txt") == "intact"


async def test_awareness_reaches_others_and_is_removed_on_disconnect(relay: Relay) -> None:
    room, secret = new_room()
    url = relay.url(room, secret)
    doc_a, doc_b, doc_c = pycrdt.Doc(), pycrdt.Doc(), pycrdt.Doc()
    async with link(doc_b, url) as b:
        a = link(doc_a, url)
        async with a:
            await a.wait_synced(5)
            await b.wait_synced(5)
            a.awareness.set_local_state({"user": "alice", "cursor": 3})
            await wait_until(
                lambda: b.awareness.states.get(doc_a.client_id) == {"user": "alice", "cursor": 3}
            )
            # A newcomer receives the awareness the relay remembered.
            async with link(doc_c, url) as c:
                await c.wait_synced(5)
                await wait_until(
                    lambda: c.awareness.states.get(doc_a.client_id, {}).get("user") == "alice"
                )
            await wait_until(lambda: doc_c.client_id not in b.awareness.states)
        await wait_until(lambda: doc_a.client_id not in b.awareness.states)
        assert b.awareness.get_local_state() is not None
        assert doc_a.client_id not in relay.rooms[room].awareness_states


async def test_relay_restart_merges_offline_edits_from_both_sides() -> None:
    room, secret = new_room()
    doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
    async with Relay() as first:
        port = first.port
        url = first.url(room, secret)
        a, b = link(doc_a, url), link(doc_b, url)
        await a.start()
        await b.start()
        try:
            await a.wait_synced(5)
            await b.wait_synced(5)
            files(doc_a)["notes.md"] = pycrdt.Text("shared\n")
            await wait_until(lambda: text(doc_b, "notes.md") == "shared\n")
        except BaseException:
            await a.stop()
            await b.stop()
            raise
    try:
        await wait_until(lambda: not a.connected and not b.connected)
        append(doc_a, "notes.md", "from a\n")
        append(doc_b, "notes.md", "from b\n")
        files(doc_b)["new.md"] = pycrdt.Text("made while down")
        async with Relay(port=port) as second:
            await a.wait_synced(5)
            await b.wait_synced(5)
            await wait_until(lambda: text(doc_a, "notes.md") == text(doc_b, "notes.md"))
            merged = text(doc_a, "notes.md")
            assert merged in ("shared\nfrom a\nfrom b\n", "shared\nfrom b\nfrom a\n")
            await wait_until(lambda: text(doc_a, "new.md") == "made while down")
            await wait_until(lambda: second.rooms[room].text("files", "notes.md") == merged)
    finally:
        await a.stop()
        await b.stop()
