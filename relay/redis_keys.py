"""The names and value encodings of the relay's Redis keys (``collab-relay --redis``).

Keys, per room (the ``{room}`` hash tag keeps a room's keys in one Redis
Cluster slot)::

    <prefix>:{<room>}:secrets    string: SHA-256 of the read-write secret (32 bytes),
                                 then that of the read-only secret if any (32 bytes)
    <prefix>:{<room>}:log        stream of updates: fields n (node id), u (the update)
    <prefix>:{<room>}:snapshot   hash: data (merged update), upto (last log id merged in)
    <prefix>:{<room>}:events     pub/sub channel: awareness, awareness queries, secret
                                 changes, RPC messages
    <prefix>:node:<id>:wake      stream (one entry) that wakes this node's reader

Pub/sub messages on a room's channel are one kind byte and the sending
node's id, then: ``A`` an awareness message (y-websocket framing); ``Q``
nothing (republish your awareness); ``S`` nothing (reload the secrets);
``R`` the recipient's client id (8 bytes, big-endian; 0 for everyone) and
the RPC message.

:mod:`relay.redis_store` writes and reads the room logs and snapshots,
:mod:`relay.redis_events` the channels; both name keys through
:class:`RedisKeys`.
"""

from __future__ import annotations

from relay.store import StoreError

__all__ = [
    "AWARENESS",
    "DEFAULT_PREFIX",
    "QUERY",
    "RPC",
    "SECRETS",
    "RedisKeys",
    "encode_event",
    "encode_rpc_event",
    "encode_secrets",
    "parse_event",
    "parse_rpc_event",
    "parse_secrets",
    "stream_id_key",
]

DEFAULT_PREFIX = "collab-relay"
_DIGEST_BYTES = 32

# Pub/sub messages: one kind byte, the sender's node id, then the payload.
#: An awareness message of the sender's peers.
AWARENESS = b"A"
#: "Republish your peers' awareness."
QUERY = b"Q"
#: "The room's secrets changed: reload them."
SECRETS = b"S"
#: An RPC message, after the recipient's client id.
RPC = b"R"
_RPC_TO_BYTES = 8


class RedisKeys:
    """The names of every key and channel under one prefix."""

    def __init__(self, prefix: str) -> None:
        """Name keys under ``prefix``."""
        self.prefix = prefix

    def room(self, room_id: str, kind: str) -> str:
        """A room's key (``secrets``, ``log``, ``snapshot``) or channel (``events``)."""
        return f"{self.prefix}:{{{room_id}}}:{kind}"

    def node(self, node_id: str, kind: str) -> str:
        """A node's own key (``wake``) or channel (``events``)."""
        return ":".join((self.prefix, "node", node_id, kind))

    def room_of(self, key: bytes | str) -> str:
        """The room a room key or channel name (as Redis returns it) belongs to."""
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.prefix) + 2 : text.rindex("}")]


def stream_id_key(stream_id: bytes | str) -> tuple[int, int]:
    """A Redis stream id (``ms-seq``) as a sortable pair."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def encode_secrets(rw_digest: bytes, ro_digest: bytes | None) -> bytes:
    """The value of a room's ``secrets`` key."""
    return rw_digest + (ro_digest or b"")


def parse_secrets(value: bytes) -> tuple[bytes, bytes | None]:
    """The read-write and read-only digests in a room's ``secrets`` key.

    Raises:
        StoreError: If the value has the wrong length.
    """
    if len(value) not in (_DIGEST_BYTES, 2 * _DIGEST_BYTES):
        raise StoreError(f"corrupt room secrets in Redis ({len(value)} bytes)")
    return value[:_DIGEST_BYTES], value[_DIGEST_BYTES:] or None


def encode_event(kind: bytes, node: bytes, payload: bytes = b"") -> bytes:
    """A pub/sub message of ``kind`` from ``node``."""
    return kind + node + payload


def encode_rpc_event(node: bytes, to: int, message: bytes) -> bytes:
    """A pub/sub RPC message from ``node`` for client id ``to`` (0: everyone)."""
    return encode_event(RPC, node, to.to_bytes(_RPC_TO_BYTES, "big") + message)


def parse_event(data: bytes, node_length: int) -> tuple[bytes, bytes, bytes]:
    """Split a pub/sub message into kind, sender node id and payload.

    Args:
        data: The message.
        node_length: The length of node ids (this node's; all are assumed as long).
    """
    return data[:1], data[1 : 1 + node_length], data[1 + node_length :]


def parse_rpc_event(payload: bytes) -> tuple[int, bytes] | None:
    """The recipient and message of an RPC payload, ``None`` if it is too short."""
    if len(payload) <= _RPC_TO_BYTES:
        return None
    return int.from_bytes(payload[:_RPC_TO_BYTES], "big"), payload[_RPC_TO_BYTES:]
