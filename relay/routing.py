"""RPC routing: who receives an RPC message (:mod:`relay.protocol`, type 100).

The relay does not read RPC payloads; it only addresses them. A message to
``to == 0`` goes to every other peer of the room, one to ``to != 0`` to the
peer whose connection announced the awareness client id ``to``. Each
delivered message carries the sender's ``from`` and ``flags``, stamped here
from the sender's connection (:attr:`relay.peer.Peer.rpc_sender`,
:attr:`~relay.peer.Peer.rpc_flags`), never taken from the client.

Which connection holds a client id: the one that announced it last (a
reconnecting client announces its id again on its new connection while the
relay may not have noticed yet that the old one is dead); a connection that
announces an id's removal stops holding it.

Scaled out on Redis, a node publishes on the room's channel every message to
``to == 0``, and every message to ``to != 0`` that none of its own peers
holds; the other nodes deliver it to their own peers the same way
(:meth:`RpcRouter.deliver_remote`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from relay import protocol
from relay.metrics import RelayMetrics
from relay.peer import Peer
from relay.protocol import AwarenessMessage, ProtocolError, RpcDelivery, RpcSend
from relay.room import Room

__all__ = ["RpcPublisher", "RpcRouter"]

_log = logging.getLogger(__name__)

#: Sends a delivered RPC message (bytes) to ``to`` in a room on the other nodes.
RpcPublisher = Callable[[str, int, bytes], None]


class RpcRouter:
    """Routes the RPC messages of a relay's rooms, and tracks who holds which client id."""

    def __init__(self, metrics: RelayMetrics, publish: RpcPublisher | None = None) -> None:
        """Create a router.

        Args:
            metrics: The relay's metrics (``rpc_messages``).
            publish: Publishes a message to the other relay nodes (scale-out),
                called as ``publish(room_id, to, message)``.
        """
        self._metrics = metrics
        self._publish = publish

    def note_awareness(self, room: Room, peer: Peer, message: AwarenessMessage) -> None:
        """Record the client ids an awareness message from ``peer`` announces or removes."""
        for entry in message.entries:
            if entry.removed:
                peer.forget(entry.client_id)
                continue
            for other in _peers(room):
                if other is not peer:
                    other.forget(entry.client_id)
            peer.announced(entry.client_id)

    def route(self, room: Room, sender: Peer, message: RpcSend) -> None:
        """Deliver an RPC message from a peer of this node."""
        delivery = protocol.encode_rpc_delivery(
            sender.rpc_sender, sender.rpc_flags, message.payload
        )
        if message.to == 0:
            self._deliver(room, 0, delivery, exclude=sender)
            route = "broadcast"
        elif self._deliver(room, message.to, delivery, exclude=None):
            route = "direct"
        else:
            route = "no_target" if self._publish is None else "other_node"
        if self._publish is not None and route in ("broadcast", "other_node"):
            self._publish(room.room_id, message.to, delivery)
        self._metrics.rpc_messages.inc(route=route)

    def deliver_remote(self, room: Room, to: int, message: bytes) -> None:
        """Deliver an RPC message another relay node published, to this node's peers."""
        try:
            parsed = protocol.parse_message(message, from_relay=True)
        except ProtocolError as exc:
            _log.warning("room %s: bad RPC message from another node: %s", room.room_id, exc)
            return
        if not isinstance(parsed, RpcDelivery):
            _log.warning("room %s: not an RPC message from another node", room.room_id)
            return
        if self._deliver(room, to, message, exclude=None):
            self._metrics.rpc_messages.inc(route="from_node")

    def _deliver(self, room: Room, to: int, message: bytes, *, exclude: Peer | None) -> int:
        delivered = 0
        for peer in _peers(room):
            if peer is exclude or (to != 0 and not peer.holds(to)):
                continue
            peer.send(message)
            delivered += 1
        return delivered


def _peers(room: Room) -> list[Peer]:
    return [p for p in room.peers if isinstance(p, Peer)]
