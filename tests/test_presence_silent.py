"""Silent peers and silent relays: pings drop them within seconds, not after 30 s of awareness.

The silent party is a real OS process stopped with SIGSTOP: its TCP
connections stay open (the kernel still acknowledges), it just never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest

from collab_ls.relay_link import LinkStatus, RelayLink
from relay.server import Relay
from tests.relay_helpers import new_room, wait_until

#: Short pings for the tests: a silent connection is dropped within about 1.5 s.
PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0
#: How long the tests wait for a silent party to be dropped: well below the
#: 30 s after which Yjs forgets an awareness state that is not renewed.
WITHIN = 12.0

#: A peer in its own process: joins the room, announces itself, prints its
#: awareness client id, and waits.
PEER_SCRIPT = """
import asyncio, sys
import pycrdt
from collab_ls.relay_link import RelayLink

async def main() -> None:
    link = RelayLink(pycrdt.Doc(), sys.argv[1], origin="remote")
    async with link:
        await link.wait_synced(10)
        link.awareness.set_local_state({"user": "frozen"})
        print(link.client_id, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, continued and killed on the way out whatever happened."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            await proc.wait()


async def first_line(stream: asyncio.StreamReader | None, within: float = 20.0) -> str:
    assert stream is not None
    async with asyncio.timeout(within):
        return (await stream.readline()).decode().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_frozen_peer_leaves_the_others_awareness_within_seconds() -> None:
    async with Relay(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT) as relay:
        room, secret = new_room()
        url = relay.url(room, secret)
        async with RelayLink(pycrdt.Doc(), url, origin="remote") as watcher:
            await watcher.wait_synced(5)
            async with process(sys.executable, "-c", PEER_SCRIPT, url) as peer:
                line = await first_line(peer.stdout)
                assert line.isdigit(), line
                frozen = int(line)
                await wait_until(
                    lambda: watcher.awareness.states.get(frozen) == {"user": "frozen"}, within=10
                )
                assert len(relay.rooms[room].peers) == 2
                peer.send_signal(signal.SIGSTOP)
                stopped = time.monotonic()
                await wait_until(lambda: frozen not in watcher.awareness.states, within=WITHIN)
                elapsed = time.monotonic() - stopped
                print(f"frozen peer gone from the others' awareness after {elapsed:.2f} s")
                assert len(relay.rooms[room].peers) == 1
                assert frozen not in relay.rooms[room].awareness_states
                assert relay.metrics.rejected.value(reason="ping_timeout") == 1
            # The watcher was answering all along.
            assert watcher.connected


async def test_a_link_drops_a_frozen_relay_and_moves_to_the_next_node(tmp_path: Path) -> None:
    port = free_port()
    relay_cmd = (
        sys.executable,
        "-m",
        "relay.cli",
        "--port",
        str(port),
        "--no-store",
        "--log-file",
        str(tmp_path / "relay.log"),
        "--ping-interval",
        str(PING_INTERVAL),
        "--ping-timeout",
        str(PING_TIMEOUT),
    )
    async with process(*relay_cmd) as frozen_relay, Relay() as spare:
        line = await first_line(frozen_relay.stderr)
        assert line.startswith("collab-relay listening on"), line
        room, secret = new_room()
        first = f"ws://127.0.0.1:{port}/{room}?secret={secret}"
        statuses: list[tuple[LinkStatus, str]] = []
        async with RelayLink(
            pycrdt.Doc(),
            first,
            origin="remote",
            fallback_urls=[spare.url(room, secret)],
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            backoff_initial=0.05,
            backoff_max=0.2,
            on_status=lambda status, reason: statuses.append((status, reason)),
        ) as link:
            await link.wait_synced(10)
            assert link.url.port == port
            frozen_relay.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await wait_until(lambda: link.connected and link.url.port == spare.port, within=WITHIN)
            print(f"link on the next node {time.monotonic() - stopped:.2f} s after the freeze")
            assert (
                LinkStatus.DISCONNECTED,
                f"the relay did not answer a ping within {PING_TIMEOUT:g} s",
            ) in statuses
            assert room in spare.rooms


class Blackhole:
    """A TCP proxy to a port whose connections can go silent like a lost network.

    :meth:`silence` makes every current connection drop whatever it carries,
    both ways, and never close: each end sees a peer that no longer answers.
    Connections opened afterwards work.
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._silent: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()

    def silence(self) -> None:
        for event in self._silent:
            event.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent = asyncio.Event()
        self._silent.append(silent)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, silent), self._pump(up_reader, writer, silent)
        )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, silent: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not silent.is_set():
                    writer.write(data)
                    await writer.drain()
        if silent.is_set():
            await asyncio.Event().wait()  # a lost network does not say goodbye
        writer.close()


async def test_a_link_back_before_the_relay_dropped_its_old_connection_keeps_its_presence() -> None:
    """The network goes and comes back: the link reconnects before the relay notices.

    The relay then drops the old connection (ping timeout) and removes the
    awareness states that connection owned; the link's state must survive it.
    """
    async with Relay(ping_interval=0.5, ping_timeout=2.0) as relay:
        room, secret = new_room()
        async with Blackhole(relay.port) as network:
            url = f"ws://127.0.0.1:{network.port}/{room}?secret={secret}"
            statuses: list[LinkStatus] = []
            inbox: list[bytes] = []
            async with (
                RelayLink(pycrdt.Doc(), relay.url(room, secret), origin="remote") as watcher,
                RelayLink(
                    pycrdt.Doc(),
                    url,
                    origin="remote",
                    ping_interval=0.2,
                    ping_timeout=0.5,
                    backoff_initial=0.05,
                    backoff_max=0.2,
                    on_status=lambda status, _: statuses.append(status),
                    on_rpc=lambda _, __, payload: inbox.append(payload),
                ) as roaming,
            ):
                await watcher.wait_synced(5)
                await roaming.wait_synced(5)
                roaming.awareness.set_local_state({"user": "roaming"})
                me = roaming.client_id
                await wait_until(lambda: watcher.awareness.states.get(me) == {"user": "roaming"})
                network.silence()
                await wait_until(lambda: statuses.count(LinkStatus.CONNECTED) == 2, within=WITHIN)
                assert len(relay.rooms[room].peers) == 3  # the old connection is still there
                await wait_until(
                    lambda: relay.metrics.rejected.value(reason="ping_timeout") == 1, within=WITHIN
                )
                assert len(relay.rooms[room].peers) == 2
                await asyncio.sleep(0.3)
                assert watcher.awareness.states.get(me) == {"user": "roaming"}
                assert me in relay.rooms[room].awareness_states
                # RPC messages to it reach its new connection.
                assert watcher.send_rpc(me, b"still there?")
                await wait_until(lambda: inbox == [b"still there?"])


@pytest.mark.parametrize(
    "flags", [("--ping-interval", "-1"), ("--ping-timeout", "0")], ids=["interval", "timeout"]
)
def test_cli_refuses_bad_ping_settings(flags: tuple[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--no-store", *flags],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 2
    assert "--ping-interval must be >= 0 and --ping-timeout > 0" in out.stderr


def test_ping_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ping_interval must be positive"):
        Relay(ping_interval=0)
    with pytest.raises(ValueError, match="ping_timeout must be positive"):
        RelayLink(pycrdt.Doc(), "ws://127.0.0.1:1/room?secret=s", origin="r", ping_timeout=-1)
