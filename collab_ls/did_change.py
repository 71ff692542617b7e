"""Reading ``textDocument/didChange`` params from plain JSON, without pygls or cattrs.

Keystrokes are most of an editor's messages: collab-ls reads their params as
plain JSON (see :mod:`collab_ls.dispatch`) and checks the LSP shape here,
into the :mod:`collab_ls.reconcile` change types.
"""

from __future__ import annotations

from typing import Any

from collab_ls.reconcile import Change, FullChange, RangeChange

__all__ = ["InvalidChange", "parse_changes"]


class InvalidChange(ValueError):
    """A ``didChange`` whose JSON does not have the LSP shape."""


def parse_changes(params: Any) -> tuple[str, int, list[Change]]:
    """Read ``DidChangeTextDocumentParams`` from plain JSON.

    Raises:
        InvalidChange: with a message naming what is wrong.
    """
    try:
        doc = params["textDocument"]
        uri = doc["uri"]
        version = doc["version"]
        raw = params["contentChanges"]
        if not isinstance(uri, str) or not isinstance(version, int) or not isinstance(raw, list):
            raise InvalidChange("textDocument.uri, textDocument.version or contentChanges")
        changes: list[Change] = []
        for c in raw:
            text = c["text"]
            if not isinstance(text, str):
                raise InvalidChange("contentChanges[].text must be a string")
            rng = c.get("range")
            if rng is None:
                changes.append(FullChange(text))
            else:
                s, e = rng["start"], rng["end"]
                nums = (s["line"], s["character"], e["line"], e["character"])
                for n in nums:  # a loop, not all(...): one of these per keystroke
                    if not isinstance(n, int) or isinstance(n, bool):
                        raise InvalidChange("range positions must be integers")
                changes.append(RangeChange(*nums, text))
        return uri, version, changes
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidChange(f"malformed didChange: missing or wrong field {exc}") from exc
