"""Plain HTTP on the relay's port: health, metrics and the host's admin endpoints.

A request without ``Upgrade: websocket`` is answered here (websockets'
``process_request`` hook) and never reaches the room logic, so these paths
cannot collide with room ids. Only ``GET`` exists (websockets parses nothing
else).

* ``GET /healthz``: ``200 ok`` while the relay serves.
* ``GET /metrics``: Prometheus text format (:mod:`relay.metrics`).
* Admin, authenticated by the room's read-write secret in
  ``Authorization: Bearer <secret>`` (403 otherwise, 404 for an unknown room):

  - ``GET /rooms/<room>``: JSON ``{"room", "read_only_link", "peers": [{"peer",
    "access", "clients"}]}``; ``clients`` are the awareness client ids a peer
    announced, to find who is who.
  - ``GET /rooms/<room>/rotate?link=read-only|read-write``: replace that
    secret by a fresh one, disconnect (4403) everyone connected with the old
    one; JSON ``{"room", "link", "secret"}`` with the new secret. Rotating the
    read-write secret disconnects the caller's own connections too: they must
    reconnect with the new secret (``RelayLink.set_url``).
  - ``GET /rooms/<room>/remove?client=<id>`` or ``?peer=<peer id>``: disconnect
    (4403) that peer; JSON ``{"room", "removed": n}``. Rotate its link as well
    to keep it out.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from relay.links import Access
from relay.store import StoreError

if TYPE_CHECKING:
    from relay.server import Relay

__all__ = ["process_request"]

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def process_request(
    relay: Relay, conn: ServerConnection, request: Request
) -> Response | None:
    """Answer a plain HTTP request; ``None`` lets a websocket handshake through."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    target = urlsplit(request.path)
    path = target.path
    if path == "/healthz":
        return conn.respond(HTTPStatus.OK, "ok\n")
    if path == "/metrics":
        response = conn.respond(HTTPStatus.OK, relay.metrics.render())
        _set_type(response, _METRICS_TYPE)
        return response
    if path.startswith("/rooms/"):
        return await _admin(relay, conn, request, path[len("/rooms/") :], parse_qs(target.query))
    return conn.respond(HTTPStatus.NOT_FOUND, "not found: try /healthz, /metrics or a websocket\n")


async def _admin(
    relay: Relay,
    conn: ServerConnection,
    request: Request,
    rest: str,
    query: dict[str, list[str]],
) -> Response:
    room_part, _, action = rest.partition("/")
    room_id = unquote(room_part)
    auth = request.headers.get("Authorization", "")
    secret = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
    try:
        room = await relay._room_for(room_id)
    except StoreError as exc:
        return _json(conn, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
    # The same answer for an unknown room and a wrong secret would hide which
    # rooms exist; but room ids are unguessable, and 404 helps operators.
    if room is None:
        return _json(conn, HTTPStatus.NOT_FOUND, {"error": f"no room {room_id}"})
    if not room.secret_matches(secret):
        relay.metrics.rejected.inc(reason="bad_admin_secret")
        return _json(
            conn,
            HTTPStatus.FORBIDDEN,
            {"error": "send the room's read-write secret as Authorization: Bearer <secret>"},
        )
    if action == "":
        return _json(conn, HTTPStatus.OK, relay.room_info(room_id) or {})
    if action == "rotate":
        link = query.get("link", ["read-only"])[0]
        try:
            access = Access(link)
        except ValueError:
            return _json(conn, HTTPStatus.BAD_REQUEST, {"error": f"unknown link {link!r}"})
        try:
            new = await relay.rotate_secret(room_id, access)
        except StoreError as exc:
            return _json(conn, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        return _json(conn, HTTPStatus.OK, {"room": room_id, "link": access.value, "secret": new})
    if action == "remove":
        client = query.get("client", [None])[0]
        peer = query.get("peer", [None])[0]
        if client is not None and not client.isdigit():
            return _json(conn, HTTPStatus.BAD_REQUEST, {"error": "client must be an integer"})
        removed = relay.remove_peer(
            room_id, client_id=None if client is None else int(client), peer_id=peer
        )
        return _json(conn, HTTPStatus.OK, {"room": room_id, "removed": removed})
    return _json(conn, HTTPStatus.NOT_FOUND, {"error": f"unknown action {action!r}"})


def _json(conn: ServerConnection, status: HTTPStatus, body: dict[str, Any]) -> Response:
    response = conn.respond(status, json.dumps(body) + "\n")
    _set_type(response, "application/json")
    return response


def _set_type(response: Response, content_type: str) -> None:
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
