"""The y-websocket wire format, defined once for the relay and the client link.

Every websocket message is one binary frame holding one message::

    message       = varUint(type) body
    SYNC (0)      = varUint(sub-type) varUint8Array(payload)
                    sub-type 0 SyncStep1: payload is a state vector
                    sub-type 1 SyncStep2: payload is a Yjs v1 update (the answer to a SyncStep1)
                    sub-type 2 Update:    payload is a Yjs v1 update
    AWARENESS (1) = varUint8Array(awareness update)
                    awareness update = varUint(n) n * (varUint(clientID) varUint(clock)
                                       varString(JSON state, "null" when the client left))
    AUTH (2)      = varUint(0 = permission denied) varString(reason)
    QUERY_AWARENESS (3) = nothing
    RPC (100), client to relay = varUint(to) varUint8Array(payload)
    RPC (100), relay to client = varUint(from) varUint(flags) varUint8Array(payload)

``varUint`` is the unsigned LEB128 integer of lib0, ``varUint8Array`` a varUint
length followed by that many bytes and ``varString`` a varUint8Array of UTF-8
(:mod:`relay.lib0` reads and writes them).
Types 0 to 3 are what Yjs' ``y-websocket`` provider and server speak, so
standard Yjs clients interoperate with the relay.

This module reads and writes those bytes. The messages as typed values, and
the websocket close codes, are :mod:`relay.messages`'; they are re-exported
here, so both ends import the whole wire from this one module.

RPC (100) is collab-ls' own: a request/response channel beside the document
(the host's language server answering guests). The payload is opaque to the
relay (collab-ls puts JSON in it). A client addresses ``to``: 0 for every
other peer in the room, otherwise the peer whose connection announced the
awareness client id ``to`` (the most recent announcer when several did). The
relay delivers it with ``from`` stamped by itself, never read from the
client: the awareness client id the sender's connection announced most
recently and has not removed since, 0 if none. So ``from`` is as good as
awareness itself: any holder of the room's secret can announce any client id.
``flags`` is a bit set (:class:`~relay.messages.RpcFlags`); bit 0 says the sender joined
with the read-only secret. Unknown flag bits are kept, for later versions.
The two directions share the type byte, so a reader must know which way a
message travels: :func:`parse_message` takes ``from_relay``.

:func:`parse_message` is strict where pycrdt's own ``Decoder`` is lenient (it
reads past the end, silently truncates, and ignores trailing bytes): every
malformed, truncated or unknown message raises :class:`ProtocolError` with a
text fit for a log line or a websocket close reason, and nothing else. The
Yjs updates inside sync messages are checked by decoding them with pycrdt.
(An update that decodes can still fail half-way through ``apply_update``;
:mod:`relay.room` tries each update on a replica before forwarding it.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pycrdt
from pycrdt import YSyncMessageType as SyncMessageType

from relay.lib0 import MAX_VAR_UINT as MAX_VAR_UINT  # re-exported: tests import it from here
from relay.lib0 import (
    ProtocolError,
    Reader,
    check_var_uint,
    write_var_bytes,
    write_var_string,
    write_var_uint,
)
from relay.messages import (
    MAX_CLOSE_REASON_BYTES,
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    CloseCode,
    Message,
    MessageType,
    QueryAwareness,
    RpcDelivery,
    RpcFlags,
    RpcSend,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    close_reason,
)

__all__ = [
    "MAX_CLOSE_REASON_BYTES",
    "AuthDenied",
    "AwarenessEntry",
    "AwarenessMessage",
    "CloseCode",
    "Message",
    "MessageType",
    "ProtocolError",
    "QueryAwareness",
    "RpcDelivery",
    "RpcFlags",
    "RpcSend",
    "SyncMessageType",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "close_reason",
    "encode_auth_denied",
    "encode_awareness",
    "encode_awareness_update",
    "encode_query_awareness",
    "encode_rpc",
    "encode_rpc_delivery",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_sync_update",
    "parse_awareness_update",
    "parse_message",
    "parse_state_vector",
    "validate_update",
]

#: The update of an empty document, sent by peers that have nothing new.
EMPTY_UPDATE = b"\x00\x00"

_AUTH_PERMISSION_DENIED = 0


def parse_message(data: bytes, *, from_relay: bool = False) -> Message:
    """Parse one y-websocket message, checking it completely.

    Args:
        data: The bytes of one binary websocket frame.
        from_relay: Whether the relay sent it (an RPC message is then a
            :class:`RpcDelivery`, otherwise a :class:`RpcSend`).

    Returns:
        The typed message. Sync payloads are checked: state vectors are well
        formed and updates decode as Yjs v1 updates.

    Raises:
        ProtocolError: On anything malformed: bad or truncated varints,
            lengths past the end, unknown types, trailing bytes, updates that
            do not decode, awareness states that are not JSON.
    """
    if not data:
        raise ProtocolError("empty message")
    reader = Reader(bytes(data), "message")
    kind = reader.var_uint("message type")
    message: Message
    if kind == MessageType.SYNC:
        sub = reader.var_uint("sync message type")
        if sub == SyncMessageType.SYNC_STEP1:
            state_vector = reader.var_bytes("state vector")
            parse_state_vector(state_vector)
            message = SyncStep1(state_vector)
        elif sub == SyncMessageType.SYNC_STEP2:
            update = reader.var_bytes("update")
            validate_update(update)
            message = SyncStep2(update)
        elif sub == SyncMessageType.SYNC_UPDATE:
            update = reader.var_bytes("update")
            validate_update(update)
            message = SyncUpdate(update)
        else:
            raise ProtocolError(f"unknown sync message type {sub}")
    elif kind == MessageType.AWARENESS:
        payload = reader.var_bytes("awareness update")
        message = AwarenessMessage(payload, parse_awareness_update(payload))
    elif kind == MessageType.AUTH:
        auth_kind = reader.var_uint("auth message type")
        if auth_kind != _AUTH_PERMISSION_DENIED:
            raise ProtocolError(f"unknown auth message type {auth_kind}")
        message = AuthDenied(reader.var_string("reason"))
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MessageType.RPC and from_relay:
        sender = reader.var_uint("rpc sender")
        flags = RpcFlags(reader.var_uint("rpc flags"))
        message = RpcDelivery(sender, flags, reader.var_bytes("rpc payload"))
    elif kind == MessageType.RPC:
        to = reader.var_uint("rpc recipient")
        message = RpcSend(to, reader.var_bytes("rpc payload"))
    else:
        raise ProtocolError(f"unknown message type {kind}")
    reader.end()
    return message


def parse_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a state vector.

    Args:
        state_vector: ``varUint(n) n * (varUint(clientID) varUint(clock))``.

    Returns:
        The clock of each client.

    Raises:
        ProtocolError: If it is malformed.
    """
    reader = Reader(state_vector, "state vector")
    count = reader.var_uint("entry count")
    clocks: dict[int, int] = {}
    for _ in range(count):
        client_id = reader.var_uint("client id")
        clocks[client_id] = reader.var_uint("clock")
    reader.end()
    return clocks


def validate_update(update: bytes) -> None:
    """Check that bytes decode as a Yjs v1 update, without applying them.

    Args:
        update: The update.

    Raises:
        ProtocolError: If pycrdt cannot decode it.
    """
    if update == EMPTY_UPDATE:
        return
    try:
        pycrdt.get_state(update)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic surfaces as a BaseException
        raise ProtocolError(f"bad update: {exc}") from None


def parse_awareness_update(payload: bytes) -> tuple[AwarenessEntry, ...]:
    """Decode an awareness update.

    Args:
        payload: The awareness update (the body of an AWARENESS message).

    Returns:
        Its entries, in order.

    Raises:
        ProtocolError: If it is malformed or a state is not JSON.
    """
    reader = Reader(payload, "awareness update")
    count = reader.var_uint("entry count")
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id = reader.var_uint("client id")
        clock = reader.var_uint("clock")
        state_json = reader.var_string("state")
        if not state_json:
            state_json = "null"  # pycrdt reads an empty state as "left"
        try:
            json.loads(state_json)
        except ValueError as exc:
            raise ProtocolError(
                f"bad awareness update: state of client {client_id} is not JSON ({exc})"
            ) from None
        entries.append(AwarenessEntry(client_id, clock, state_json))
    reader.end()
    return tuple(entries)


def encode_sync_step1(state_vector: bytes) -> bytes:
    """Build a SyncStep1 message.

    Args:
        state_vector: The sender's state vector (``Doc.get_state()``).

    Returns:
        The message.
    """
    return _sync_message(SyncMessageType.SYNC_STEP1, state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """Build a SyncStep2 message.

    Args:
        update: What the other side misses (``Doc.get_update(their_state_vector)``).

    Returns:
        The message.
    """
    return _sync_message(SyncMessageType.SYNC_STEP2, update)


def encode_sync_update(update: bytes) -> bytes:
    """Build a sync Update message.

    Args:
        update: A Yjs v1 update (``TransactionEvent.update``).

    Returns:
        The message.
    """
    return pycrdt.create_update_message(update)


def encode_awareness(payload: bytes) -> bytes:
    """Build an AWARENESS message around an encoded awareness update.

    Args:
        payload: An awareness update (``Awareness.encode_awareness_update(ids)``
            or :func:`encode_awareness_update`).

    Returns:
        The message.
    """
    return pycrdt.create_awareness_message(payload)


def encode_awareness_update(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode awareness entries as an awareness update payload.

    Args:
        entries: The entries.

    Returns:
        The payload, to wrap with :func:`encode_awareness`.
    """
    items = list(entries)
    chunks = [write_var_uint(len(items))]
    for entry in items:
        chunks.append(write_var_uint(entry.client_id))
        chunks.append(write_var_uint(entry.clock))
        chunks.append(write_var_string(entry.state_json))
    return b"".join(chunks)


def encode_auth_denied(reason: str) -> bytes:
    """Build an AUTH permission-denied message.

    Args:
        reason: Why.

    Returns:
        The message.
    """
    return (
        write_var_uint(MessageType.AUTH)
        + write_var_uint(_AUTH_PERMISSION_DENIED)
        + write_var_string(reason)
    )


def encode_query_awareness() -> bytes:
    """Build a QUERY_AWARENESS message.

    Returns:
        The message.
    """
    return write_var_uint(MessageType.QUERY_AWARENESS)


def encode_rpc(to: int, payload: bytes) -> bytes:
    """Build an RPC message for a client to send to the relay.

    Args:
        to: The recipient's awareness client id, 0 for every other peer.
        payload: Opaque bytes.

    Returns:
        The message.

    Raises:
        ValueError: If ``to`` is not a varUint (0 to 2**64 - 1).
    """
    check_var_uint("to", to)
    return write_var_uint(MessageType.RPC) + write_var_uint(to) + write_var_bytes(bytes(payload))


def encode_rpc_delivery(sender: int, flags: RpcFlags | int, payload: bytes) -> bytes:
    """Build an RPC message as the relay delivers it.

    Args:
        sender: The sender's awareness client id (the ``from`` field), 0 if none.
        flags: What the relay says about the sender (:class:`RpcFlags`).
        payload: Opaque bytes, as sent.

    Returns:
        The message.

    Raises:
        ValueError: If ``sender`` or ``flags`` is not a varUint.
    """
    check_var_uint("sender", sender)
    check_var_uint("flags", int(flags))
    return (
        write_var_uint(MessageType.RPC)
        + write_var_uint(sender)
        + write_var_uint(int(flags))
        + write_var_bytes(bytes(payload))
    )


def _sync_message(sub: SyncMessageType, payload: bytes) -> bytes:
    return write_var_uint(MessageType.SYNC) + write_var_uint(sub) + write_var_bytes(payload)
