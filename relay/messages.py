"""The y-websocket messages as typed values, and the websocket close codes.

Each class stands for one message of the wire format that :mod:`relay.protocol`
defines and parses (:func:`relay.protocol.parse_message` returns a
:data:`Message`, its ``encode_*`` functions build the bytes);
:class:`MessageType` holds the type numbers. :class:`CloseCode` and
:func:`close_reason` are what the relay and its clients say when they close a
connection. Plain values: nothing here reads or writes bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

__all__ = [
    "MAX_CLOSE_REASON_BYTES",
    "AuthDenied",
    "AwarenessEntry",
    "AwarenessMessage",
    "CloseCode",
    "Message",
    "MessageType",
    "QueryAwareness",
    "RpcDelivery",
    "RpcFlags",
    "RpcSend",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "close_reason",
]

#: The longest close reason the websocket protocol allows, in UTF-8 bytes.
MAX_CLOSE_REASON_BYTES = 123


class MessageType(IntEnum):
    """The top-level y-websocket message types."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    RPC = 100


class RpcFlags(IntFlag):
    """The flags the relay stamps on a delivered RPC message."""

    NONE = 0
    #: The sender joined the room with the read-only secret.
    READ_ONLY = 1


class CloseCode(IntEnum):
    """Websocket close codes used between the relay and its clients.

    4400 malformed message; 4403 wrong, missing or revoked secret, or removed
    by the host; 4405 a change sent on a read-only link; 4408 slow consumer;
    4429 rate limit; 4503 room or relay full; 1009 message too big; 1011 the
    relay's store failed, or a keepalive ping went unanswered. Clients should
    not retry 4403 and 4405.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    BAD_MESSAGE = 4400
    FORBIDDEN = 4403
    READ_ONLY = 4405
    SLOW_CONSUMER = 4408
    RATE_LIMITED = 4429
    FULL = 4503


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """Sync step 1: "here is my state vector, send me what I miss"."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """Sync step 2: the update answering a :class:`SyncStep1`."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state inside an awareness update.

    Attributes:
        client_id: The Yjs client id the state belongs to.
        clock: Increases with every change of that client's state.
        state_json: The state as JSON text; ``"null"`` means the client left.
    """

    client_id: int
    clock: int
    state_json: str

    @property
    def state(self) -> Any:
        """The decoded state, ``None`` when the client left."""
        return json.loads(self.state_json)

    @property
    def removed(self) -> bool:
        """Whether this entry says the client left."""
        return self.state is None


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """An awareness update: the raw payload and its decoded entries."""

    update: bytes
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class AuthDenied:
    """An auth message: permission denied, with the reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for the full current awareness."""


@dataclass(frozen=True, slots=True)
class RpcSend:
    """An RPC message as a client sends it to the relay.

    Attributes:
        to: The awareness client id of the recipient, 0 for every other peer.
        payload: Opaque bytes.
    """

    to: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RpcDelivery:
    """An RPC message as the relay delivers it.

    Attributes:
        sender: The sender's awareness client id, stamped by the relay (the
            ``from`` field); 0 when its connection announced none.
        flags: What the relay says about the sender.
        payload: Opaque bytes, as sent.
    """

    sender: int
    flags: RpcFlags
    payload: bytes

    @property
    def read_only(self) -> bool:
        """Whether the sender is on a read-only link."""
        return RpcFlags.READ_ONLY in self.flags


Message = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessMessage
    | AuthDenied
    | QueryAwareness
    | RpcSend
    | RpcDelivery
)


def close_reason(text: str) -> str:
    """Shorten a text to fit in a websocket close frame.

    Args:
        text: The reason.

    Returns:
        The text, cut at a character boundary to at most 123 UTF-8 bytes.
    """
    raw = text.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return text
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."
