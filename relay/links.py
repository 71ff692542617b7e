"""Room capabilities: secrets, access modes and the join URLs built from them.

A room has two capabilities, each an unguessable secret: the read-write
secret and (optionally) the read-only secret. The secret a connection
presents decides its :class:`Access`. The relay never keeps a secret itself,
only its SHA-256 digest (:func:`secret_digest`), compared in constant time.

Join URLs (what a host shows its guests)::

    read-write: ws://HOST:PORT/<room>?secret=<rw>
    read-only:  ws://HOST:PORT/<room>?secret=<ro>&access=read-only
    host:       ws://HOST:PORT/<room>?secret=<rw>&ro=<ro>

``access=read-only`` is only a hint for clients (collab-ls opens nothing for
writing and sends no updates); the relay ignores it and decides by the
secret. ``ro=<ro>`` on the host's URL registers the read-only secret when that
connection is the one creating the room (a relay restarted without a store,
or one the host never registered with); it is ignored for an existing room.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "ACCESS_HINT_PARAM",
    "MIN_SECRET_CHARS",
    "READ_ONLY_PARAM",
    "SECRET_PARAM",
    "Access",
    "SessionLinks",
    "digest_matches",
    "new_room_id",
    "new_secret",
    "secret_digest",
    "session_links",
]

#: The shortest secret a room accepts: ``secrets.token_urlsafe(16)``, 128 bits.
MIN_SECRET_CHARS = 22
SECRET_PARAM = "secret"
READ_ONLY_PARAM = "ro"
ACCESS_HINT_PARAM = "access"


class Access(enum.Enum):
    """What a connection may do in its room."""

    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


def new_secret() -> str:
    """A fresh secret of 128 random bits (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def new_room_id() -> str:
    """A fresh room id of 128 random bits."""
    return secrets.token_urlsafe(16)


def secret_digest(secret: str) -> bytes:
    """The SHA-256 digest of a secret, what rooms and stores keep."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def digest_matches(secret: str | None, digest: bytes | None) -> bool:
    """Compare a presented secret with a stored digest, in constant time.

    Args:
        secret: The presented secret, ``None`` when missing.
        digest: The stored digest, ``None`` when that capability does not exist.

    Returns:
        Whether the secret is the one the digest was made from.
    """
    if digest is None:
        return False
    # Hash even a missing secret so timing does not tell missing from wrong.
    presented = secret_digest(secret or "")
    return hmac.compare_digest(presented, digest) and bool(secret)


@dataclass(frozen=True, slots=True)
class SessionLinks:
    """The join URLs of one room.

    Attributes:
        read_write: For guests who may edit.
        read_only: For guests who may only watch (``None`` without a read-only secret).
        host: For the host's own connection: the read-write URL that also
            registers the read-only secret when it creates the room.
    """

    read_write: str
    read_only: str | None
    host: str


def session_links(
    base_url: str, room: str, secret: str, read_only_secret: str | None = None
) -> SessionLinks:
    """Build a room's join URLs.

    Args:
        base_url: ``ws://host:port`` or ``wss://host:port`` (a trailing ``/`` is fine).
        room: The room id.
        secret: The read-write secret.
        read_only_secret: The read-only secret, if the room has one.

    Returns:
        The URLs.

    Raises:
        ValueError: If ``base_url`` is not a ws/wss URL without path or query.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"bad relay base URL {base_url!r}: expected ws://host:port or wss://")
    if parts.path.strip("/") or parts.query:
        raise ValueError(f"bad relay base URL {base_url!r}: no path or query allowed")
    prefix = f"{parts.scheme}://{parts.netloc}/{quote(room, safe='')}?"
    rw = prefix + urlencode({SECRET_PARAM: secret})
    if read_only_secret is None:
        return SessionLinks(rw, None, rw)
    ro = prefix + urlencode({SECRET_PARAM: read_only_secret, ACCESS_HINT_PARAM: "read-only"})
    host = prefix + urlencode({SECRET_PARAM: secret, READ_ONLY_PARAM: read_only_secret})
    return SessionLinks(rw, ro, host)
