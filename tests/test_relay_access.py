"""Read-write and read-only links, rotation and removal, against a real relay on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import LinkStatus, RelayLink, RelayRefusedError, parse_relay_url
from relay import protocol
from relay.links import MIN_SECRET_CHARS, Access, new_room_id, new_secret, session_links
from relay.messages import AwarenessMessage, SyncStep1, SyncStep2
from relay.protocol import parse_message
from relay.server import Relay, RelayError
from tests.relay_helpers import append, files, text, wait_until

REMOTE = "remote"


def link(doc: pycrdt.Doc[Any], url: str, **kwargs: Any) -> RelayLink:
    kwargs.setdefault("backoff_initial", 0.05)
    kwargs.setdefault("backoff_max", 0.2)
    return RelayLink(doc, url, origin=REMOTE, **kwargs)


async def closed_with(ws: ClientConnection, within: float = 5.0) -> tuple[int, str]:
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, f"no close frame received: {exc}"
            return exc.rcvd.code, exc.rcvd.reason


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with Relay() as r:
        yield r


def ids(doc: pycrdt.Doc[Any]) -> set[int]:
    return set(protocol.parse_state_vector(doc.get_state()))


def test_secrets_and_links() -> None:
    secret = new_secret()
    assert len(secret) >= MIN_SECRET_CHARS and new_secret() != secret
    links = session_links("wss://relay.example:8443/", "r 1", "RW" * 11, "RO" * 11)
    assert links.read_write == f"wss://relay.example:8443/r%201?secret={'RW' * 11}"
    assert links.read_only == f"wss://relay.example:8443/r%201?secret={'RO' * 11}&access=read-only"
    assert links.host == f"wss://relay.example:8443/r%201?secret={'RW' * 11}&ro={'RO' * 11}"
    assert parse_relay_url(links.read_only).read_only
    assert not parse_relay_url(links.host).read_only
    assert session_links("ws://h:1", "r", "s").read_only is None
    with pytest.raises(ValueError, match="no path"):
        session_links("ws://h:1/x", "r", "s")


async def test_host_url_creates_a_room_with_both_links(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    links = relay.links(room, rw, ro)
    host_doc, writer_doc, reader_doc = pycrdt.Doc(), pycrdt.Doc(), pycrdt.Doc()
    async with link(host_doc, links.host) as host:
        await host.wait_synced(5)
        assert relay.rooms[room].access(ro) is Access.READ_ONLY
        assert relay.rooms[room].access(rw) is Access.READ_WRITE
        assert relay.rooms[room].access("x" * 22) is None
        assert links.read_only is not None
        async with link(writer_doc, links.read_write) as w, link(reader_doc, links.read_only) as r:
            await w.wait_synced(5)
            await r.wait_synced(5)
            assert r.read_only and not w.read_only
            files(host_doc)["a.txt"] = pycrdt.Text("host")
            await wait_until(lambda: text(reader_doc, "a.txt") == "host")
            append(writer_doc, "a.txt", "+writer")
            # The read-only peer sees every live edit.
            await wait_until(lambda: text(reader_doc, "a.txt") == "host+writer")
            # Its own edits stay local: RelayLink never sends them.
            append(reader_doc, "a.txt", "+reader")
            append(writer_doc, "a.txt", "!")
            await wait_until(lambda: text(host_doc, "a.txt") == "host+writer!")
            await asyncio.sleep(0.2)
            assert relay.rooms[room].text("files", "a.txt") == "host+writer!"
            assert r.connected
            assert reader_doc.client_id not in ids(relay.rooms[room].doc)
            info = relay.room_info(room)
            assert info is not None
            assert sorted(p["access"] for p in info["peers"]) == [
                "read-only",
                "read-write",
                "read-write",
            ]


async def test_crafted_update_from_a_read_only_peer_never_reaches_the_room(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    created = relay.create_room(room, rw, read_only_secret=ro)
    files(created.doc)["a.txt"] = pycrdt.Text("hello world")
    # Give the room a deletion so that an honest answer to SyncStep1 carries a delete set.
    with created.doc.transaction():
        value = files(created.doc)["a.txt"]
        assert isinstance(value, pycrdt.Text)
        del value[0:6]
    links = relay.links(room, rw, ro)
    assert links.read_only is not None
    watcher_doc = pycrdt.Doc()
    async with link(watcher_doc, links.read_write) as watcher:
        await watcher.wait_synced(5)
        before = created.doc.get_update()
        # 1. An honest read-only client answers SyncStep1 with what the room has: accepted.
        async with connect(links.read_only) as ws:
            step1 = parse_message(await ws.recv(decode=False))
            assert isinstance(step1, SyncStep1)
            await ws.send(protocol.encode_sync_step2(created.doc.get_update(step1.state_vector)))
            await ws.send(protocol.encode_sync_step1(b"\x00"))
            reply = parse_message(await ws.recv(decode=False))
            while isinstance(reply, AwarenessMessage):
                reply = parse_message(await ws.recv(decode=False))
            assert isinstance(reply, SyncStep2)
        # 2. Crafted changes, as Update and as SyncStep2: new text, a deletion, a new map.
        evil: pycrdt.Doc[Any] = pycrdt.Doc()
        evil.apply_update(created.doc.get_update())
        sv = evil.get_state()
        with evil.transaction():
            value = files(evil)["a.txt"]
            assert isinstance(value, pycrdt.Text)
            value += " EVIL"
        insert = evil.get_update(sv)
        deleter: pycrdt.Doc[Any] = pycrdt.Doc()
        deleter.apply_update(created.doc.get_update())
        sv = deleter.get_state()
        value = files(deleter)["a.txt"]
        assert isinstance(value, pycrdt.Text)
        del value[0:2]
        delete_only = deleter.get_update(sv)
        crafted = [
            protocol.encode_sync_update(insert),
            protocol.encode_sync_step2(insert),
            protocol.encode_sync_update(delete_only),
            protocol.encode_sync_step2(evil.get_update()),
        ]
        for message in crafted:
            async with connect(links.read_only) as ws:
                await ws.recv()
                await ws.send(message)
                assert await closed_with(ws) == (
                    4405,
                    "read-only link: document changes are refused",
                )
        assert created.doc.get_update() == before
        assert relay.rooms[room].text("files", "a.txt") == "world"
        # Nothing reached the read-write peer either, and the room still works.
        files(watcher_doc)["b.txt"] = pycrdt.Text("still fine")
        await wait_until(lambda: relay.rooms[room].text("files", "b.txt") == "still fine")
        assert text(watcher_doc, "a.txt") == "world"
        assert evil.client_id not in ids(watcher_doc)
        assert relay.metrics.rejected.value(reason="read_only") == len(crafted)


async def test_read_only_peer_may_send_awareness_and_query(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    relay.create_room(room, rw, read_only_secret=ro)
    links = relay.links(room, rw, ro)
    assert links.read_only is not None
    awareness = pycrdt.Awareness(pycrdt.Doc())
    awareness.set_local_state({"user": "guest"})
    async with connect(links.read_write) as watcher, connect(links.read_only) as ws:
        assert isinstance(parse_message(await watcher.recv(decode=False)), SyncStep1)
        await ws.send(
            protocol.encode_awareness(awareness.encode_awareness_update([awareness.client_id]))
        )
        got = parse_message(await watcher.recv(decode=False))
        assert isinstance(got, AwarenessMessage)
        assert got.entries[0].state == {"user": "guest"}


async def test_a_link_that_sends_changes_on_a_read_only_secret_is_refused(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    relay.create_room(room, rw, read_only_secret=ro)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    files(doc)["mine.txt"] = pycrdt.Text("offline edit")
    # read_only=False overrides the hint: the client misbehaves, the relay refuses.
    async with link(doc, relay.url(room, ro), read_only=False) as bad:
        # It may count as synced for a moment: the relay's SyncStep2 can
        # arrive before the relay reads the offending update.
        await wait_until(lambda: bad.status is LinkStatus.REFUSED)
        assert "read-only link" in bad.reason
        with pytest.raises(RelayRefusedError, match="read-only link"):
            await bad.wait_synced(1)
    assert relay.rooms[room].text("files", "mine.txt") is None


async def test_rotation_kicks_old_link_holders_and_keeps_the_others(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    relay.create_room(room, rw, read_only_secret=ro)
    links = relay.links(room, rw, ro)
    assert links.read_only is not None
    host_doc, guest_doc = pycrdt.Doc(), pycrdt.Doc()
    async with link(host_doc, links.read_write) as host, link(guest_doc, links.read_only) as guest:
        await host.wait_synced(5)
        await guest.wait_synced(5)
        new_ro = await relay.rotate_secret(room, Access.READ_ONLY)
        assert new_ro != ro and len(new_ro) >= MIN_SECRET_CHARS
        await wait_until(lambda: guest.status is LinkStatus.REFUSED)
        assert "read-only link was revoked" in guest.reason
        assert host.connected
        async with connect(links.read_only) as ws:
            assert await closed_with(ws) == (4403, f"wrong or missing secret for room {room}")
        fresh = relay.links(room, rw, new_ro).read_only
        assert fresh is not None
        # The guest given the new link rejoins by itself.
        guest.set_url(fresh)
        await guest.wait_synced(5)
        files(host_doc)["x.txt"] = pycrdt.Text("after rotation")
        await wait_until(lambda: text(guest_doc, "x.txt") == "after rotation")
        # Rotating the read-write secret kicks the read-write holders, the host included.
        new_rw = await relay.rotate_secret(room, Access.READ_WRITE)
        await wait_until(lambda: host.status is LinkStatus.REFUSED)
        assert guest.connected
        host.set_url(relay.url(room, new_rw))
        await host.wait_synced(5)


async def test_admin_http_endpoints(relay: Relay) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    relay.create_room(room, rw, read_only_secret=ro)
    base = f"http://127.0.0.1:{relay.port}/rooms/{room}"

    def get(url: str, secret: str | None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(url)
        if secret is not None:
            request.add_header("Authorization", f"Bearer {secret}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    guest = pycrdt.Awareness(pycrdt.Doc())
    guest.set_local_state({"user": "mallory"})
    async with connect(relay.url(room, ro)) as ws:
        await ws.send(protocol.encode_awareness(guest.encode_awareness_update([guest.client_id])))
        await wait_until(lambda: guest.client_id in relay.rooms[room].awareness_states)
        status, body = await asyncio.to_thread(get, base, ro)
        assert status == 403
        status, body = await asyncio.to_thread(get, base + "x", rw)
        assert status == 404
        status, body = await asyncio.to_thread(get, base, rw)
        assert status == 200
        assert body["peers"][0]["clients"] == [guest.client_id]
        assert body["peers"][0]["access"] == "read-only"
        status, body = await asyncio.to_thread(get, f"{base}/remove?client={guest.client_id}", rw)
        assert (status, body["removed"]) == (200, 1)
        assert await closed_with(ws) == (4403, "removed from the session by the host")
    status, body = await asyncio.to_thread(get, f"{base}/rotate?link=read-only", rw)
    assert status == 200 and body["link"] == "read-only"
    assert relay.rooms[room].access(body["secret"]) is Access.READ_ONLY
    assert relay.rooms[room].access(ro) is None
    status, body = await asyncio.to_thread(get, f"{base}/rotate?link=bogus", rw)
    assert status == 400


@pytest.mark.parametrize("query", ["?secret=short", "?secret={ok}&ro=short"])
async def test_new_rooms_need_long_secrets(relay: Relay, query: str) -> None:
    url = f"ws://127.0.0.1:{relay.port}/room1" + query.format(ok=new_secret())
    async with connect(url) as ws:
        code, reason = await closed_with(ws)
    assert code == 4403 and "at least 22 characters" in reason
    assert relay.rooms == {}
    with pytest.raises(RelayError, match="at least 22"):
        relay.create_room("room2", "short")
