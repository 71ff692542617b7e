"""What a relay link says and answers on one connection: the doc's and awareness's sync.

:class:`DocSync` holds no connection. :class:`~collab_ls.relay_link.RelayLink`
opens one, hands its outgoing queue to :meth:`DocSync.open` and each message
received to :meth:`DocSync.receive`; what concerns the connection itself (the
relay's SyncStep2, a denial, an RPC message) goes back to the link through
callbacks. Over each connection, in the y-websocket protocol
(:mod:`relay.protocol`):

* On every (re)connection it sends SyncStep1 (its state vector) and answers
  the relay's SyncStep1 with SyncStep2, so edits made while offline reach the
  relay and edits made elsewhere reach the doc.
* Remote updates are applied inside ``doc.transaction(origin=origin)``, so
  observers of the doc can tell remote changes by their origin.
* Every local transaction (origin other than ``origin``) is sent as a sync
  Update through a queue drained by one sender task. While disconnected, and
  until the relay's SyncStep1 is answered, nothing is queued: the updates
  stay in the doc and the handshake's SyncStep2 carries them.
* Read-only links (``read_only=True``, by default when the URL carries the
  ``access=read-only`` hint): remote updates are applied, local changes stay
  local and are never sent; the relay's SyncStep1 is answered with an empty
  update. The relay enforces read-only by itself whatever a client sends.
* Awareness (presence) is a ``pycrdt.Awareness`` for the doc: local changes
  are sent, remote ones applied, remote states dropped on disconnect. The
  local state is queued right after SyncStep1 on every connection, before
  anything else the link sends, so the relay knows the link's client id
  (:attr:`RelayLink.client_id`) before its first RPC message. On a
  reconnection it goes with a newer clock: the relay, which may not have
  noticed yet that the old connection is dead, then owns the state by the new
  one and removes nothing when it drops the old one.
* RPC messages (:mod:`relay.protocol`, type 100): :meth:`RelayLink.send_rpc`
  sends opaque bytes to one peer (by its awareness client id) or to every
  other peer; each one received is handed to ``on_rpc(from_id, read_only,
  payload)``, where the relay stamped ``from_id`` and ``read_only``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import pycrdt

from relay import protocol
from relay.protocol import (
    AuthDenied,
    AwarenessMessage,
    ProtocolError,
    QueryAwareness,
    RpcDelivery,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

__all__ = ["DocSync"]


class DocSync:
    """The sync of a doc and its awareness with a relay, over one connection at a time."""

    def __init__(
        self,
        doc: pycrdt.Doc[Any],
        awareness: pycrdt.Awareness,
        *,
        origin: object,
        read_only: bool,
        log: logging.LoggerAdapter[logging.Logger],
        awareness_origin: object,
        on_step2: Callable[[], None],
        on_denied: Callable[[str], None],
        on_rpc: Callable[[RpcDelivery], None],
    ) -> None:
        """Set up the sync; nothing is observed until :meth:`observe`.

        Args:
            doc: The document to keep in sync.
            awareness: The doc's awareness.
            origin: The transaction origin of remote updates (hashable);
                transactions with this origin are not sent back.
            read_only: Never send local changes.
            log: Where to log.
            awareness_origin: The origin of the awareness changes made here.
            on_step2: Called after each SyncStep2 from the relay is applied.
            on_denied: Called with the reason when the relay denies the link.
            on_rpc: Called with each RPC message received.
        """
        self._doc = doc
        self._awareness = awareness
        self._origin = origin
        self._origin_hash = hash(origin)
        self._read_only = read_only
        self._log = log
        self._awareness_origin = awareness_origin
        self._on_step2 = on_step2
        self._on_denied = on_denied
        self._on_rpc = on_rpc
        self._out: asyncio.Queue[bytes] | None = None
        self._answered = False
        # Connections opened so far.
        self._sessions = 0
        self._doc_sub: pycrdt.Subscription | None = None
        self._awareness_sub: str | None = None

    def observe(self) -> None:
        """Start watching the doc and the awareness for local changes."""
        self._doc_sub = self._doc.observe(self._on_transaction)
        self._awareness_sub = self._awareness.observe(self._on_awareness)

    def unobserve(self) -> None:
        """Stop watching the doc and the awareness. Idempotent."""
        if self._doc_sub is not None:
            self._doc.unobserve(self._doc_sub)
            self._doc_sub = None
        if self._awareness_sub is not None:
            self._awareness.unobserve(self._awareness_sub)
            self._awareness_sub = None

    def open(self, out: asyncio.Queue[bytes]) -> None:
        """Begin a connection whose outgoing messages go on ``out``: queue the handshake."""
        out.put_nowait(protocol.encode_sync_step1(self._doc.get_state()))
        awareness = self._awareness
        local = awareness.get_local_state()
        if local is not None:
            if self._sessions and awareness.meta[awareness.client_id]["clock"] > 0:
                # Reconnected: announce a newer clock than the old connection
                # did. The relay may not have noticed yet that the old one is
                # dead; it then makes this connection the state's owner, and
                # dropping the old one later removes nothing for the others.
                awareness.set_local_state(local)
            out.put_nowait(self._local_awareness_message())
        self._sessions += 1
        self._out = out
        self._answered = False

    def detach(self) -> None:
        """The connection is gone: queue nothing more."""
        self._out = None

    def send_rpc(self, to: int, payload: bytes) -> bool:
        """Queue an RPC message on the open connection; see :meth:`RelayLink.send_rpc`."""
        out = self._out
        if out is None:
            return False
        try:
            message = protocol.encode_rpc(to, payload)
        except (TypeError, ValueError) as exc:
            self._log.warning("not sending an RPC message: %s", exc)
            return False
        out.put_nowait(message)
        return True

    # Incoming

    def receive(self, data: str | bytes, out: asyncio.Queue[bytes]) -> bool:
        """Handle one message; returns False when the connection must end."""
        if isinstance(data, str):
            self._log.warning("skipping a text message from the relay (%d chars)", len(data))
            return True
        try:
            message = protocol.parse_message(data, from_relay=True)
        except ProtocolError as exc:
            self._log.warning("skipping a malformed message from the relay: %s", exc)
            return True
        if isinstance(message, SyncStep1):
            if self._read_only:
                out.put_nowait(protocol.encode_sync_step2(protocol.EMPTY_UPDATE))
            else:
                update = self._doc.get_update(message.state_vector)
                out.put_nowait(protocol.encode_sync_step2(update))
            self._answered = True
        elif isinstance(message, SyncStep2 | SyncUpdate):
            self._apply_remote(message.update)
            if isinstance(message, SyncStep2):
                self._on_step2()
        elif isinstance(message, AwarenessMessage):
            try:
                self._awareness.apply_awareness_update(
                    message.update, origin=self._awareness_origin
                )
            except Exception:
                self._log.exception("awareness update from the relay failed")
        elif isinstance(message, QueryAwareness):
            ids = list(self._awareness.states)
            payload = self._awareness.encode_awareness_update(ids)
            out.put_nowait(protocol.encode_awareness(payload))
        elif isinstance(message, RpcDelivery):
            self._on_rpc(message)
        elif isinstance(message, AuthDenied):
            self._on_denied(message.reason or "permission denied")
            return False
        return True

    def _apply_remote(self, update: bytes) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        try:
            with self._doc.transaction(origin=self._origin):
                self._doc.apply_update(update)
        except Exception:
            # Either pycrdt refused the update (possibly after applying part
            # of it; the relay trial-applies updates so this should not
            # happen) or an observer of the doc failed after it was applied.
            # The next handshake re-syncs by state vector.
            self._log.exception("applying an update from the relay failed")

    def drop_remote_awareness(self) -> None:
        """Forget every other peer's awareness state (the connection ended)."""
        awareness = self._awareness
        others = [cid for cid in awareness.states if cid != awareness.client_id]
        if others:
            awareness.remove_awareness_states(others, origin=self._awareness_origin)

    # Outgoing

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        # Runs inside the transaction's commit: must not raise (pycrdt would
        # re-raise it in whoever committed) and must not touch the doc.
        out = self._out
        if (
            out is None
            or self._read_only
            or not self._answered
            or _origin_hash(event) == self._origin_hash
        ):
            # Before the relay's SyncStep1 is answered, the answer (SyncStep2)
            # will carry this update. Sending it earlier would reach the relay
            # before the edits it depends on, where pycrdt keeps it pending
            # and leaves it out of what late joiners receive.
            return
        update = event.update
        if update != protocol.EMPTY_UPDATE:
            out.put_nowait(protocol.encode_sync_update(update))

    def _on_awareness(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        out = self._out
        if out is None or topic != "update" or change[1] != "local":
            return
        out.put_nowait(self._local_awareness_message())

    def _local_awareness_message(self) -> bytes:
        payload = self._awareness.encode_awareness_update([self._awareness.client_id])
        return protocol.encode_awareness(payload)


def _origin_hash(event: pycrdt.TransactionEvent) -> int | None:
    # pycrdt 0.14 gives observers the raw transaction as ``event.transaction``
    # (missing from its type stubs); ``origin()`` returns the hash of the
    # Python origin the transaction was created with, or None.
    origin = cast(Any, event).transaction.origin()
    return None if origin is None else int(origin)
