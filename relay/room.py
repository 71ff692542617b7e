"""A relay room: the merged document, its secrets, its peers and their awareness.

The room is plain synchronous code over pycrdt and :mod:`relay.protocol`; it
knows peers only through :class:`PeerHandle`, whose ``send`` must never block
(the server's peers put the bytes on a bounded queue drained by a writer
task). Because no method awaits, every method runs atomically with respect
to the other connections of the event loop: a newcomer either sees an update
in the room document or receives it forwarded, never neither. (A server with
a store awaits the write between :meth:`Room.accept_update` and
:meth:`Room.commit_update`; a newcomer joining meanwhile syncs without the
update and then receives it forwarded.)

Read-only peers: an update from a read-only peer is accepted only if it
changes nothing (a read-only client answering the relay's SyncStep1 sends
what the room already has, deletions included); anything else raises
:class:`ReadOnlyError` and reaches neither the room nor the other peers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pycrdt

from relay import protocol
from relay.links import Access, digest_matches, secret_digest
from relay.protocol import (
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

__all__ = ["PeerHandle", "ReadOnlyError", "Room", "UpdateRejectedError"]

_log = logging.getLogger(__name__)


class UpdateRejectedError(Exception):
    """pycrdt refused to apply a peer's update; the room document is unchanged."""


class ReadOnlyError(Exception):
    """A read-only peer sent an update that would change the room; it was dropped."""


class PeerHandle(Protocol):
    """What a room needs from a connected peer."""

    @property
    def peer_id(self) -> str:
        """A short id for logs."""
        ...

    def send(self, data: bytes) -> None:
        """Queue one message for the peer without blocking.

        A peer that cannot take it any more disconnects itself (and may call
        :meth:`Room.leave` from inside this call).
        """
        ...


#: Seconds an awareness state relayed from another relay node is kept without
#: renewal (Yjs clients renew theirs every 15 s and drop others' after 30 s).
REMOTE_AWARENESS_TTL = 30.0


@dataclass(slots=True)
class _AwarenessRecord:
    entry: AwarenessEntry
    # None: announced by a peer of another relay node (scale-out).
    owner: PeerHandle | None
    seen: float = 0.0


class Room:
    """The state of one room, for late joiners and forwarding.

    Attributes:
        room_id: The room id (the websocket path without its leading ``/``).
        doc: The merged document of everything peers sent. Changes made to
            it directly are sent to every peer.
    """

    def __init__(self, room_id: str, secret: str, read_only_secret: str | None = None) -> None:
        """Create an empty room.

        Args:
            room_id: The room id.
            secret: The read-write secret.
            read_only_secret: The read-only secret; without one, the room has
                no read-only capability.
        """
        self.room_id = room_id
        self.rw_digest: bytes = secret_digest(secret)
        self.ro_digest: bytes | None = (
            None if read_only_secret is None else secret_digest(read_only_secret)
        )
        #: Called with each change made to ``doc`` directly (by a host
        #: embedding the relay), not through a peer: the server stores it.
        self.on_direct_update: Callable[[bytes], None] | None = None
        #: Called with each awareness message this node's peers caused (their
        #: own, and the removals when they leave): a scaled-out relay
        #: publishes it to the other nodes.
        self.on_local_awareness: Callable[[bytes], None] | None = None
        #: ``time.monotonic()`` of the last join, leave or message.
        self.last_active = time.monotonic()
        self._access: dict[int, Access] = {}
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        # pycrdt can fail half-way through an update that decodes fine (seen
        # by fuzzing: "block parent ... must be deleted or shared ref type")
        # and leaves the part it applied. Every update is tried on this
        # replica of the room first; only the ones it accepts are forwarded
        # and applied to the room document, so the room never diverges from
        # its peers. Changes made to ``doc`` directly (by a host embedding the
        # relay) are mirrored here and sent to every peer.
        self._shadow: pycrdt.Doc[Any] = pycrdt.Doc()
        self._trying = False
        self._mirror = self.doc.observe(self._mirror_transaction)
        self._peers: dict[int, PeerHandle] = {}
        self._awareness: dict[int, _AwarenessRecord] = {}

    @classmethod
    def from_digests(cls, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> Room:
        """Create an empty room from stored secret digests."""
        room = cls(room_id, "")
        room.rw_digest, room.ro_digest = rw_digest, ro_digest
        return room

    def access(self, secret: str | None) -> Access | None:
        """The access a presented secret grants, compared in constant time.

        Args:
            secret: The presented secret, ``None`` when missing.

        Returns:
            Its access, or ``None`` if it is neither of the room's secrets.
        """
        # Both comparisons always run: timing tells nothing about which matched.
        rw = digest_matches(secret, self.rw_digest)
        ro = digest_matches(secret, self.ro_digest)
        if rw:
            return Access.READ_WRITE
        return Access.READ_ONLY if ro else None

    def secret_matches(self, secret: str | None) -> bool:
        """Whether a presented secret is the room's read-write secret (constant time)."""
        return self.access(secret) is Access.READ_WRITE

    def set_secret(self, access: Access, secret: str | None) -> list[PeerHandle]:
        """Replace (rotate) or remove one of the room's secrets.

        Args:
            access: Which capability.
            secret: The new secret; ``None`` removes the read-only capability.

        Returns:
            The connected peers that joined with the old secret: the caller
            disconnects them.

        Raises:
            ValueError: On an attempt to remove the read-write secret.
        """
        return self.set_digest(access, None if secret is None else secret_digest(secret))

    def set_digest(self, access: Access, digest: bytes | None) -> list[PeerHandle]:
        """Like :meth:`set_secret`, given the new secret's digest (from a shared store)."""
        if access is Access.READ_WRITE:
            if digest is None:
                raise ValueError("a room always has a read-write secret")
            self.rw_digest = digest
        else:
            self.ro_digest = digest
        return [p for key, p in self._peers.items() if self._access.get(key) is access]

    def peer_access(self, peer: PeerHandle) -> Access | None:
        """The access a connected peer joined with."""
        return self._access.get(id(peer))

    def awareness_clients(self, peer: PeerHandle) -> list[int]:
        """The awareness client ids a peer announced (present or not)."""
        return [cid for cid, rec in self._awareness.items() if rec.owner is peer]

    @property
    def peers(self) -> tuple[PeerHandle, ...]:
        """The connected peers."""
        return tuple(self._peers.values())

    @property
    def awareness_states(self) -> dict[int, AwarenessEntry]:
        """The current awareness entries by client id (present clients only)."""
        now = time.monotonic()
        return {
            cid: rec.entry
            for cid, rec in self._awareness.items()
            if not rec.entry.removed
            and (rec.owner is not None or now - rec.seen < REMOTE_AWARENESS_TTL)
        }

    def text(self, files_key: str, path: str) -> str | None:
        """Read a file's text, for tests and diagnostics.

        Args:
            files_key: The root map name (``files``).
            path: The key in that map.

        Returns:
            The text, or ``None`` if there is no such file.
        """
        files = self.doc.get(files_key, type=pycrdt.Map)
        value = files.get(path)
        return None if value is None else str(value)

    def join(self, peer: PeerHandle, access: Access = Access.READ_WRITE) -> None:
        """Add a peer and queue its welcome: the room's state vector and awareness.

        Args:
            peer: The new peer.
            access: What it may do.
        """
        self._peers[id(peer)] = peer
        self._access[id(peer)] = access
        self.last_active = time.monotonic()
        peer.send(protocol.encode_sync_step1(self.doc.get_state()))
        present = list(self.awareness_states.values())
        if present:
            payload = protocol.encode_awareness_update(present)
            peer.send(protocol.encode_awareness(payload))

    def leave(self, peer: PeerHandle) -> None:
        """Remove a peer and tell the others its awareness states are gone.

        Idempotent.

        Args:
            peer: The peer leaving.
        """
        if self._peers.pop(id(peer), None) is None:
            return
        self._access.pop(id(peer), None)
        self.last_active = time.monotonic()
        gone: list[AwarenessEntry] = []
        for cid, rec in list(self._awareness.items()):
            if rec.owner is peer:
                if not rec.entry.removed:
                    gone.append(AwarenessEntry(cid, rec.entry.clock, "null"))
                del self._awareness[cid]
        if gone:
            message = protocol.encode_awareness(protocol.encode_awareness_update(gone))
            self._broadcast(message, exclude=None)
            if self.on_local_awareness is not None:
                self.on_local_awareness(message)

    def handle(self, peer: PeerHandle, message: Message, raw: bytes) -> None:
        """Act on one parsed message from a peer.

        Updates are forwarded first (the raw bytes, to every other peer) and
        then applied to the room document.

        Args:
            peer: The sender; must have joined.
            message: The parsed message.
            raw: The bytes it was parsed from.

        Raises:
            UpdateRejectedError: If pycrdt could not apply an update. The room
                document is unchanged; the caller should disconnect the peer.
            ReadOnlyError: If a read-only peer sent a change. The room
                document is unchanged; the caller should disconnect the peer.
        """
        self.last_active = time.monotonic()
        if isinstance(message, SyncStep1):
            peer.send(protocol.encode_sync_step2(self.doc.get_update(message.state_vector)))
        elif isinstance(message, SyncStep2 | SyncUpdate):
            if self.accept_update(peer, message.update):
                self.commit_update(peer, message.update, raw)
        elif isinstance(message, AwarenessMessage):
            self._remember_awareness(peer, message)
            self._broadcast(raw, exclude=peer)
            if self.on_local_awareness is not None:
                self.on_local_awareness(raw)
        elif isinstance(message, QueryAwareness):
            present = list(self.awareness_states.values())
            peer.send(protocol.encode_awareness(protocol.encode_awareness_update(present)))
        elif isinstance(message, AuthDenied):
            _log.debug("room %s: ignoring auth message from %s", self.room_id, peer.peer_id)

    def accept_update(self, peer: PeerHandle, update: bytes) -> bool:
        """Check a peer's update against the room's replica, first half of handling it.

        After it returns True, the caller must call :meth:`commit_update`
        with the same update (possibly after storing it), or
        :meth:`abandon_update` if it cannot.

        Args:
            peer: The sender.
            update: The update.

        Returns:
            Whether there is something to commit (False for an empty update
            or a read-only peer's update that changes nothing).

        Raises:
            UpdateRejectedError: If pycrdt could not apply it.
            ReadOnlyError: If the peer is read-only and the update changes something.
        """
        self.last_active = time.monotonic()
        if update == protocol.EMPTY_UPDATE:
            return False
        if self._access.get(id(peer), Access.READ_WRITE) is Access.READ_ONLY:
            self._check_read_only(update)
            return False
        self._try_update(update)
        return True

    def commit_update(self, peer: PeerHandle | None, update: bytes, raw: bytes) -> None:
        """Forward an accepted update to the other peers and apply it to the room document.

        Args:
            peer: The sender (not sent back to), ``None`` to send to everyone.
            update: The update :meth:`accept_update` accepted.
            raw: The message to forward.

        Raises:
            UpdateRejectedError: If the document refused it (the replicas had
                diverged; they are resynchronised).
        """
        self._broadcast(raw, exclude=peer)
        self._trying = True
        try:
            self.doc.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a Rust panic surfaces as a BaseException
            # Cannot happen unless the replicas diverged; resynchronise them.
            _log.error("room %s: update accepted by the replica failed: %s", self.room_id, exc)
            self._rebuild_shadow()
            raise UpdateRejectedError(f"update rejected: {exc}") from None
        finally:
            self._trying = False

    def apply_remote(self, update: bytes) -> None:
        """Apply an update another relay node accepted and stored, and send it to every peer.

        Raises:
            UpdateRejectedError: If pycrdt refused it (the room is unchanged).
        """
        self.last_active = time.monotonic()
        if update == protocol.EMPTY_UPDATE:
            return
        self._try_update(update)
        self.commit_update(None, update, protocol.encode_sync_update(update))

    def apply_remote_awareness(self, message: AwarenessMessage, raw: bytes) -> None:
        """Remember and forward an awareness message from another relay node's peers."""
        self._remember_awareness(None, message)
        self._broadcast(raw, exclude=None)

    def local_awareness_message(self) -> bytes | None:
        """The awareness message of the states this node's own peers announced, if any."""
        mine = [
            rec.entry
            for rec in self._awareness.values()
            if rec.owner is not None and not rec.entry.removed
        ]
        if not mine:
            return None
        return protocol.encode_awareness(protocol.encode_awareness_update(mine))

    def load(self, updates: list[bytes] | tuple[bytes, ...]) -> None:
        """Apply stored updates to a fresh room, before any peer joins.

        Raises:
            UpdateRejectedError: If a stored update cannot be applied.
        """
        self._trying = True
        try:
            for update in updates:
                try:
                    self._shadow.apply_update(update)
                    self.doc.apply_update(update)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # a Rust panic surfaces as a BaseException
                    raise UpdateRejectedError(f"stored update rejected: {exc}") from None
        finally:
            self._trying = False

    def abandon_update(self) -> None:
        """Forget accepted updates that will not be committed (the store failed)."""
        self._rebuild_shadow()

    def _check_read_only(self, update: bytes) -> None:
        refused = ReadOnlyError("read-only link: document changes are refused")
        try:
            clocks = protocol.parse_state_vector(pycrdt.get_state(update))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a Rust panic surfaces as a BaseException
            raise refused from None
        known = protocol.parse_state_vector(self._shadow.get_state())
        if any(clock > known.get(client, 0) for client, clock in clocks.items()):
            raise refused
        # Only known structs: the delete set may still delete something.
        # Applying an update that changes nothing commits no transaction, so
        # an observer tells; if it did change the replica, rebuild it.
        changed: list[bytes] = []
        subscription = self._shadow.observe(lambda event: changed.append(event.update))
        try:
            self._shadow.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a Rust panic surfaces as a BaseException
            changed.append(b"")
        finally:
            self._shadow.unobserve(subscription)
        if any(u != protocol.EMPTY_UPDATE for u in changed):
            self._rebuild_shadow()
            raise refused

    def _try_update(self, update: bytes) -> None:
        try:
            self._shadow.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a Rust panic surfaces as a BaseException
            self._rebuild_shadow()
            raise UpdateRejectedError(f"update rejected: {exc}") from None

    def _rebuild_shadow(self) -> None:
        # pycrdt's get_update leaves out pending structs (updates waiting for
        # a missing dependency); the rebuilt replica lacks them until the
        # dependency arrives, which at worst rejects a peer's update.
        shadow: pycrdt.Doc[Any] = pycrdt.Doc()
        shadow.apply_update(self.doc.get_update())
        self._shadow = shadow

    def _mirror_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._trying:
            return
        self._shadow.apply_update(event.update)
        if event.update != protocol.EMPTY_UPDATE:
            if self.on_direct_update is not None:
                self.on_direct_update(event.update)
            self._broadcast(protocol.encode_sync_update(event.update), exclude=None)

    def _remember_awareness(self, peer: PeerHandle | None, message: AwarenessMessage) -> None:
        # The same rule as y-protocols' applyAwarenessUpdate: newer clocks win,
        # and a removal at the same clock wins over a present state.
        for entry in message.entries:
            known = self._awareness.get(entry.client_id)
            if known is not None:
                old = known.entry
                newer = entry.clock > old.clock or (
                    entry.clock == old.clock and entry.removed and not old.removed
                )
                if not newer:
                    continue
            self._awareness[entry.client_id] = _AwarenessRecord(entry, peer, time.monotonic())

    def _broadcast(self, data: bytes, *, exclude: PeerHandle | None) -> None:
        # A peer's send may make it leave (slow consumer): iterate over a copy
        # and skip the ones already gone.
        for key, other in list(self._peers.items()):
            if other is exclude or key not in self._peers:
                continue
            other.send(data)
