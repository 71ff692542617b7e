"""The custom LSP surface of collab-ls, defined once for the server and editor configs.

Commands (``workspace/executeCommand``):

``collab.shareUrl``
    Returns the session's join URL (a string), or ``null`` before the session
    is up.
``collab.status``
    Returns ``{"role": "host"|"guest", "url": str|null, "connected": bool,
    "documents": [relative paths]}``.

Notifications from the server:

``$/collab/status``
    ``{"connected": bool, "message": str, "url": str|null}`` whenever the
    link to the relay changes state (also shown with ``window/showMessage``).
"""

from __future__ import annotations

from typing import Final

CMD_SHARE_URL: Final = "collab.shareUrl"
CMD_STATUS: Final = "collab.status"
COMMANDS: Final = (CMD_SHARE_URL, CMD_STATUS)

NOTIFY_STATUS: Final = "$/collab/status"
