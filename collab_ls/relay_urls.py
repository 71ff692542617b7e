"""Relay URLs: parsing and checking ``ws[s]://host:port/<room>?secret=<secret>``.

A relay URL names one node of a relay, one room on it and the room's secret;
the ``access=read-only`` hint says the link only receives. Several nodes of a
relay scaled out on Redis (``collab-relay --redis``) share their rooms, so a
link may be given a comma-separated list of URLs, or fallback URLs, all of the
same room (:func:`parse_relay_urls`). When the secret is rotated, the new URL's
room and query are carried over to every other node (:func:`_on_node`).

Also the base of the relay link's errors (:class:`RelayLinkError`), which the
URL errors share with :mod:`collab_ls.relay_link`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from relay.links import ACCESS_HINT_PARAM, SECRET_PARAM

__all__ = [
    "RelayLinkError",
    "RelayUrl",
    "RelayUrlError",
    "parse_relay_url",
    "parse_relay_urls",
]


class RelayLinkError(Exception):
    """Base class of the relay link's errors."""


class RelayUrlError(RelayLinkError, ValueError):
    """The relay URL is malformed."""


@dataclass(frozen=True, slots=True)
class RelayUrl:
    """A parsed relay URL.

    Attributes:
        url: The URL as given.
        scheme: ``ws`` or ``wss``.
        host: The host name or address.
        port: The port (the scheme's default when absent).
        room: The room id (the unquoted path without its leading ``/``).
        secret: The room secret.
        read_only: Whether the URL carries the ``access=read-only`` hint.
    """

    url: str
    scheme: str
    host: str
    port: int
    room: str
    secret: str
    read_only: bool = False

    @property
    def redacted(self) -> str:
        """The URL without its secret, for logs and status messages."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.room}"


def parse_relay_url(url: str) -> RelayUrl:
    """Parse and check a relay URL.

    Args:
        url: ``ws://host[:port]/<room>?secret=<secret>`` (or ``wss://``).

    Returns:
        The parsed URL.

    Raises:
        RelayUrlError: If the scheme is not ws/wss, or the host, the room or
            the ``secret`` query parameter is missing.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RelayUrlError(f"bad relay URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise RelayUrlError(
            f"bad relay URL {url!r}: the scheme must be ws:// or wss://, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise RelayUrlError(f"bad relay URL {url!r}: no host")
    room = unquote(parts.path.lstrip("/"))
    if not room:
        raise RelayUrlError(f"bad relay URL {url!r}: no room (expected ws://host:port/<room>)")
    query = parse_qs(parts.query)
    secrets = query.get(SECRET_PARAM)
    if not secrets or not secrets[0]:
        raise RelayUrlError(f"bad relay URL {url!r}: no secret (expected ?secret=...)")
    if port is None:
        port = 443 if parts.scheme == "wss" else 80
    read_only = query.get(ACCESS_HINT_PARAM, [""])[0] == "read-only"
    return RelayUrl(url, parts.scheme, parts.hostname, port, room, secrets[0], read_only)


def parse_relay_urls(urls: str, fallback_urls: Sequence[str] = ()) -> list[RelayUrl]:
    """Parse a comma-separated list of relay URLs and more fallbacks, all of one room.

    Args:
        urls: One URL, or several separated by commas.
        fallback_urls: More URLs.

    Returns:
        The parsed URLs, in order, without duplicates.

    Raises:
        RelayUrlError: If a URL is malformed, there is none, or they name
            different rooms.
    """
    texts = [u.strip() for u in urls.split(",") if u.strip()]
    texts += [u.strip() for u in fallback_urls if u.strip()]
    if not texts:
        raise RelayUrlError("no relay URL")
    parsed: list[RelayUrl] = []
    for text in dict.fromkeys(texts):
        url = parse_relay_url(text)
        if parsed and url.room != parsed[0].room:
            raise RelayUrlError(
                f"relay URLs name different rooms ({parsed[0].room!r} and {url.room!r}): "
                "fallback URLs are other nodes of the same relay"
            )
        parsed.append(url)
    return parsed


def _on_node(url: RelayUrl, node: RelayUrl) -> RelayUrl:
    """``url``'s room and query (secret) on ``node``'s scheme, host and port."""
    parts = urlsplit(url.url)
    host = f"[{node.host}]" if ":" in node.host else node.host
    query = f"?{parts.query}" if parts.query else ""
    return parse_relay_url(f"{node.scheme}://{host}:{node.port}{parts.path}{query}")
