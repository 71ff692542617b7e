"""A relay room: the merged document, its secret, its peers and their awareness.

The room is plain synchronous code over pycrdt and :mod:`relay.protocol`; it
knows peers only through :class:`PeerHandle`, whose ``send`` must never block
(the server's peers put the bytes on a bounded queue drained by a writer
task). Because no method awaits, every method runs atomically with respect
to the other connections of the event loop: a newcomer either sees an update
in the room document or receives it forwarded, never neither.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import pycrdt

from relay import protocol
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

__all__ = ["PeerHandle", "Room", "UpdateRejectedError"]

_log = logging.getLogger(__name__)


class UpdateRejectedError(Exception):
    """pycrdt refused to apply a peer's update; the room document is unchanged."""


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


@dataclass(slots=True)
class _AwarenessRecord:
    entry: AwarenessEntry
    owner: PeerHandle | None


class Room:
    """The state of one room, for late joiners and forwarding.

    Attributes:
        room_id: The room id (the websocket path without its leading ``/``).
        doc: The merged document of everything peers sent. Changes made to
            it directly are sent to every peer.
    """

    def __init__(self, room_id: str, secret: str) -> None:
        """Create an empty room.

        Args:
            room_id: The room id.
            secret: The secret every connection must present.
        """
        self.room_id = room_id
        self._secret = secret
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

    def secret_matches(self, secret: str | None) -> bool:
        """Compare a presented secret with the room's, in constant time.

        Args:
            secret: The presented secret, ``None`` when missing.

        Returns:
            Whether it is the room's secret.
        """
        if secret is None:
            return False
        return hmac.compare_digest(secret.encode("utf-8"), self._secret.encode("utf-8"))

    @property
    def peers(self) -> tuple[PeerHandle, ...]:
        """The connected peers."""
        return tuple(self._peers.values())

    @property
    def awareness_states(self) -> dict[int, AwarenessEntry]:
        """The current awareness entries by client id (present clients only)."""
        return {cid: rec.entry for cid, rec in self._awareness.items() if not rec.entry.removed}

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

    def join(self, peer: PeerHandle) -> None:
        """Add a peer and queue its welcome: the room's state vector and awareness.

        Args:
            peer: The new peer.
        """
        self._peers[id(peer)] = peer
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
        gone: list[AwarenessEntry] = []
        for cid, rec in list(self._awareness.items()):
            if rec.owner is peer:
                if not rec.entry.removed:
                    gone.append(AwarenessEntry(cid, rec.entry.clock, "null"))
                del self._awareness[cid]
        if gone:
            payload = protocol.encode_awareness_update(gone)
            self._broadcast(protocol.encode_awareness(payload), exclude=None)

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
        """
        if isinstance(message, SyncStep1):
            peer.send(protocol.encode_sync_step2(self.doc.get_update(message.state_vector)))
        elif isinstance(message, SyncStep2 | SyncUpdate):
            if message.update == protocol.EMPTY_UPDATE:
                return
            self._try_update(message.update)
            self._broadcast(raw, exclude=peer)
            self._trying = True
            try:
                self.doc.apply_update(message.update)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a Rust panic surfaces as a BaseException
                # Cannot happen unless the replicas diverged; resynchronise them.
                _log.error("room %s: update accepted by the replica failed: %s", self.room_id, exc)
                self._rebuild_shadow()
                raise UpdateRejectedError(f"update rejected: {exc}") from None
            finally:
                self._trying = False
        elif isinstance(message, AwarenessMessage):
            self._remember_awareness(peer, message)
            self._broadcast(raw, exclude=peer)
        elif isinstance(message, QueryAwareness):
            present = list(self.awareness_states.values())
            peer.send(protocol.encode_awareness(protocol.encode_awareness_update(present)))
        elif isinstance(message, AuthDenied):
            _log.debug("room %s: ignoring auth message from %s", self.room_id, peer.peer_id)

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
            self._broadcast(protocol.encode_sync_update(event.update), exclude=None)

    def _remember_awareness(self, peer: PeerHandle, message: AwarenessMessage) -> None:
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
            self._awareness[entry.client_id] = _AwarenessRecord(entry, peer)

    def _broadcast(self, data: bytes, *, exclude: PeerHandle | None) -> None:
        # A peer's send may make it leave (slow consumer): iterate over a copy
        # and skip the ones already gone.
        for key, other in list(self._peers.items()):
            if other is exclude or key not in self._peers:
                continue
            other.send(data)
