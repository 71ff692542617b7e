"""Limits (peers per room, rooms, rate) and observability (/healthz, /metrics) of a real relay."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pycrdt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import RelayLink
from relay import protocol
from relay.server import Relay, TokenBucket
from tests.relay_helpers import append, files, new_room, text, wait_until


def link(doc: pycrdt.Doc[Any], url: str) -> RelayLink:
    return RelayLink(doc, url, origin="remote", backoff_initial=0.05, backoff_max=0.2)


async def closed_with(ws: ClientConnection, within: float = 5.0) -> tuple[int, str]:
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, f"no close frame received: {exc}"
            return exc.rcvd.code, exc.rcvd.reason


def http_get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def scrape(port: int) -> dict[str, float]:
    _, content_type, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    start = bucket._stamp
    assert [bucket.take(start) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(start + 0.11)  # one token back after 1/rate seconds
    assert not bucket.take(start + 0.11)
    assert all(bucket.take(start + 10) for _ in range(3))


async def test_room_full_and_relay_full_are_refused_with_a_reason() -> None:
    async with Relay(max_peers_per_room=2, max_rooms=1) as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        async with connect(url), connect(url):
            await wait_until(lambda: len(relay.rooms[room].peers) == 2)
            async with connect(url) as third:
                assert await closed_with(third) == (4503, "room full (2 peers), try later")
            other, other_secret = new_room()
            async with connect(relay.url(other, other_secret)) as ws:
                assert await closed_with(ws) == (4503, "relay full (1 rooms), try later")
        assert list(relay.rooms) == [room]
        metrics = await asyncio.to_thread(scrape, relay.port)
        assert metrics["collab_relay_rejected_connections_total{reason=room_full}"] == 1
        assert metrics["collab_relay_rejected_connections_total{reason=relay_full}"] == 1


async def test_rate_limit_closes_a_flooding_peer_only() -> None:
    async with Relay(rate_limit=50, rate_burst=20) as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, url) as a, link(doc_b, url) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            async with connect(url) as flood:
                for _ in range(100):
                    await flood.send(protocol.encode_query_awareness())
                assert await closed_with(flood) == (4429, "rate limit: more than 50 messages/s")
            # Honest peers typing at a human pace stay connected.
            files(doc_a)["a.txt"] = pycrdt.Text()
            for ch in "typing":
                append(doc_a, "a.txt", ch)
                await asyncio.sleep(0.03)
            await wait_until(lambda: text(doc_b, "a.txt") == "typing")
            assert a.connected and b.connected


async def test_healthz_and_metrics_move() -> None:
    async with Relay() as relay:
        status, _, body = await asyncio.to_thread(
            http_get, f"http://127.0.0.1:{relay.port}/healthz"
        )
        assert (status, body) == (200, "ok\n")
        before = await asyncio.to_thread(scrape, relay.port)
        assert before["collab_relay_rooms"] == 0
        assert before["collab_relay_fanout_latency_seconds_count"] == 0
        room, secret = new_room()
        url = relay.url(room, secret)
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, url) as a, link(doc_b, url) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text("x")
            for ch in "hello":
                append(doc_a, "a.txt", ch)
            await wait_until(lambda: text(doc_b, "a.txt") == "xhello")
            async with connect(f"ws://127.0.0.1:{relay.port}/{room}?secret=wrong") as bad:
                await closed_with(bad)
            during = await asyncio.to_thread(scrape, relay.port)
        assert during["collab_relay_rooms"] == 1
        assert during["collab_relay_connections"] == 2
        assert during["collab_relay_connections_accepted_total{access=read-write}"] == 2
        assert during["collab_relay_messages_in_total{type=update}"] >= 6
        assert during["collab_relay_messages_in_total{type=sync_step1}"] >= 2
        assert during["collab_relay_messages_out_total"] > before["collab_relay_messages_out_total"]
        assert during["collab_relay_bytes_in_total"] > 0
        assert during["collab_relay_bytes_out_total"] > 0
        assert during["collab_relay_fanout_latency_seconds_count"] >= 6
        assert during["collab_relay_fanout_latency_seconds_bucket{le=+Inf}"] >= 6
        assert during["collab_relay_rejected_connections_total{reason=bad_secret}"] == 1
        status, _, body = await asyncio.to_thread(
            http_get, f"http://127.0.0.1:{relay.port}/healthz"
        )
        assert status == 200


async def test_unknown_http_path_is_404() -> None:
    async with Relay() as relay:
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(http_get, f"http://127.0.0.1:{relay.port}/nope")
        assert info.value.code == 404
        info.value.close()
