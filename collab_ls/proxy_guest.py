"""A guest's side of the host's language server.

The guest's editor asks its own collab-ls for hover, completion, definition and
the rest; this module sends each request to the host over the relay
(:class:`~collab_ls.peer_rpc.PeerRpc`) and turns the answer into the guest's
terms:

- URIs: the guest's root and the host's root differ (``/home/bob/proj`` vs
  ``/srv/alice/proj``); requests are rewritten to the host's root and results
  back (:class:`~collab_ls.lsp_json.RootMap`).
- Positions: the guest's editor and the host's server may count characters in
  different encodings; positions are converted with the session's text of each
  document, or the guest's own copy of a file the session does not hold.
- Semantic tokens: the guest advertised the standard legend; the host server's
  tokens are remapped to it.
- Code actions carrying an edit come back as a ``collab.applyHostAction``
  command, so the edit is applied on the host to the shared documents (every
  peer converges) rather than by this editor alone.
- A result pointing into a file a guest without a checkout has not fetched yet
  (``--workspace``) waits until the file is on disk, so the editor can jump.
- No hang: a timeout, the host leaving and the host's server restarting all
  give an LSP error; cancelling in the editor cancels on the host.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from collab_ls.disk import read_text
from collab_ls.linetext import LineText
from collab_ls.lsp_json import (
    STANDARD_LEGEND,
    RootMap,
    convert_positions,
    convert_semantic_tokens,
    convert_signature_offsets,
    remap_token_legend,
    uris_in,
)
from collab_ls.lsp_tokens import token_delta
from collab_ls.peer_rpc import REQUEST_FAILED, Caller, PeerRpc, RpcError
from collab_ls.session import NotInWorkspace, Session, relative_path
from collab_ls.units import Encoding

log = logging.getLogger(__name__)

CMD_APPLY_HOST_ACTION = "collab.applyHostAction"
JOIN_WAIT = 5.0
TOKENS_DELTA = "textDocument/semanticTokens/full/delta"
"""Answered by the guest itself, from the host's full tokens and the last ones it sent."""
TOKEN_RESULTS_KEPT = 64
"""Documents whose last semantic tokens a guest keeps, for deltas."""
"""Seconds a request waits for a session still syncing to show its host."""

#: The host server's capability that serves each method (None: always try).
CAPABILITY = {
    "textDocument/hover": "hoverProvider",
    "textDocument/completion": "completionProvider",
    "completionItem/resolve": "completionProvider",
    "textDocument/signatureHelp": "signatureHelpProvider",
    "textDocument/definition": "definitionProvider",
    "textDocument/declaration": "declarationProvider",
    "textDocument/typeDefinition": "typeDefinitionProvider",
    "textDocument/implementation": "implementationProvider",
    "textDocument/references": "referencesProvider",
    "textDocument/documentSymbol": "documentSymbolProvider",
    "textDocument/documentHighlight": "documentHighlightProvider",
    "textDocument/codeAction": "codeActionProvider",
    "codeAction/resolve": "codeActionProvider",
    "textDocument/codeLens": "codeLensProvider",
    "textDocument/formatting": "documentFormattingProvider",
    "textDocument/rangeFormatting": "documentRangeFormattingProvider",
    "textDocument/onTypeFormatting": "documentOnTypeFormattingProvider",
    "textDocument/rename": "renameProvider",
    "textDocument/prepareRename": "renameProvider",
    "textDocument/semanticTokens/full": "semanticTokensProvider",
    "textDocument/semanticTokens/full/delta": "semanticTokensProvider",
    "textDocument/semanticTokens/range": "semanticTokensProvider",
    "textDocument/foldingRange": "foldingRangeProvider",
    "textDocument/selectionRange": "selectionRangeProvider",
    "textDocument/documentLink": "documentLinkProvider",
    "textDocument/inlayHint": "inlayHintProvider",
    "textDocument/prepareCallHierarchy": "callHierarchyProvider",
    "callHierarchy/incomingCalls": "callHierarchyProvider",
    "callHierarchy/outgoingCalls": "callHierarchyProvider",
    "textDocument/prepareTypeHierarchy": "typeHierarchyProvider",
    "typeHierarchy/supertypes": "typeHierarchyProvider",
    "typeHierarchy/subtypes": "typeHierarchyProvider",
    "workspace/symbol": "workspaceSymbolProvider",
    "textDocument/diagnostic": "diagnosticProvider",
    "workspace/executeCommand": "executeCommandProvider",
}

#: What a guest answers when the host's server lacks a feature: the LSP "none".
EMPTY: dict[str, Any] = {
    "textDocument/documentSymbol": [],
    "textDocument/references": [],
    "textDocument/codeAction": [],
    "textDocument/foldingRange": [],
    "textDocument/documentLink": [],
    "textDocument/codeLens": [],
    "textDocument/inlayHint": [],
    "textDocument/diagnostic": {"kind": "full", "items": []},
}


class HostInfo:
    """The host's language server as published in the session (``host`` map)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        client = raw.get("client")
        self.client = int(client) if isinstance(client, int | float) else 0
        root = raw.get("root")
        self.root = root if isinstance(root, str) else ""
        self.encoding = Encoding.parse(raw.get("encoding") if raw.get("encoding") else None)
        self.state = str(raw.get("state") or "")
        self.server = str(raw.get("server") or "")
        try:
            caps = json.loads(raw.get("capabilities") or "{}")
        except (TypeError, ValueError):
            caps = {}
        self.capabilities: dict[str, Any] = caps if isinstance(caps, dict) else {}
        try:
            registered = json.loads(raw.get("registrations") or "[]")
        except (TypeError, ValueError):
            registered = []
        self.registered = {m for m in registered if isinstance(m, str)}
        self.guest_commands = raw.get("guest_commands") is True

    @property
    def legend(self) -> dict[str, Any] | None:
        provider = self.capabilities.get("semanticTokensProvider")
        legend = provider.get("legend") if isinstance(provider, dict) else None
        return legend if isinstance(legend, dict) else None

    def serves(self, method: str) -> bool:
        """Whether the host's server has the feature, statically or registered since."""
        key = CAPABILITY.get(method)
        if key is None or self.capabilities.get(key):
            return True
        # A registration names a request method or a feature (semantic tokens).
        if key in {CAPABILITY.get(m) for m in self.registered}:
            return True
        return method in self.registered or any(method.startswith(m + "/") for m in self.registered)


class GuestProxy:
    """Sends the guest editor's language requests to the host."""

    def __init__(
        self,
        *,
        rpc: PeerRpc,
        session: Session,
        root: Path,
        encoding: Encoding,
        present: Callable[[int], bool],
        publish: Callable[[str, Any], None],
        ensure_file: Callable[[str], Awaitable[None]] | None = None,
        timeout: float = 10.0,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._rpc = rpc
        self._session = session
        self.root = root
        self.encoding = encoding
        self._present = present
        self._publish = publish
        self._ensure_file = ensure_file
        self.timeout = timeout
        self._log = logger
        self._token_results: dict[str, tuple[str, list[int]]] = {}
        """Per document: the id and data of the last semantic tokens sent (for deltas)."""
        self._token_ids = itertools.count(1)

    def host(self) -> HostInfo | None:
        raw = self._session.host_info()
        return HostInfo(raw) if raw.get("root") else None

    async def _wait_host(self) -> HostInfo | None:
        """The host's info, waiting a little for a session that is still syncing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.timeout, JOIN_WAIT)
        while True:
            info = self.host()
            if info is not None and (info.state == "none" or self._present(info.client)):
                break
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        return self._host_for_request()

    def _host_for_request(self) -> HostInfo | None:
        info = self.host()
        if info is None or info.state == "none":
            return None
        if not self._present(info.client):
            raise RpcError(
                REQUEST_FAILED,
                "the host has left the session: language features are gone until it returns",
            )
        if info.state != "running":
            raise RpcError(
                REQUEST_FAILED, f"the host's language server is {info.state or 'not ready'}"
            )
        return info

    # ------------------------------------------------------------ requests

    async def request(self, method: str, params: Any) -> Any:
        """One editor request; the result in the editor's terms, or RpcError."""
        info = await self._wait_host()
        if info is None or not info.serves(method):
            return EMPTY.get(method)
        previous: Any = None
        if method == TOKENS_DELTA and isinstance(params, dict):
            # The host is asked for full tokens; the delta is made here.
            previous = params.get("previousResultId")
            method = "textDocument/semanticTokens/full"
            params = {k: v for k, v in params.items() if k != "previousResultId"}
        doc_uri = _doc_uri(params)
        here = self.root.absolute().as_uri()
        to_host, to_guest = RootMap(here, info.root), RootMap(info.root, here)
        cache: dict[str, LineText | None] = {}
        out = params
        if self.encoding != info.encoding:
            out = convert_positions(
                out, uri=doc_uri, lines_for=self._lines(cache), src=self.encoding, dst=info.encoding
            )
        out = to_host.rewrite(out)
        result = await self._rpc.request(
            info.client, "lsp", {"method": method, "params": out}, timeout=self.timeout
        )
        result = to_guest.rewrite(result)
        await self._fetch_targets(result)
        if method.startswith("textDocument/semanticTokens"):
            tokens = self._tokens(result, doc_uri, info, cache)
            if method.endswith("/full") and doc_uri is not None:
                return self._token_result(doc_uri, tokens, previous)
            return tokens
        if self.encoding != info.encoding:
            result = convert_positions(
                result,
                uri=doc_uri,
                lines_for=self._lines(cache),
                src=info.encoding,
                dst=self.encoding,
            )
        if method == "textDocument/signatureHelp":
            result = convert_signature_offsets(result, info.encoding, self.encoding)
        if method in ("textDocument/codeAction", "codeAction/resolve"):
            result = _host_actions(result)
        return result

    async def apply_host_action(self, argument: Any) -> Any:
        """``collab.applyHostAction``: a code action's edit, applied on the host."""
        info = await self._wait_host()
        if info is None:
            raise RpcError(REQUEST_FAILED, "the host runs no language server")
        if not isinstance(argument, dict):
            raise RpcError(REQUEST_FAILED, "collab.applyHostAction: expected an object")
        result: Any = None
        here = self.root.absolute().as_uri()
        if argument.get("edit") is not None:
            edit = argument["edit"]
            if self.encoding != info.encoding:
                edit = convert_positions(
                    edit, uri=None, lines_for=self._lines({}), src=self.encoding, dst=info.encoding
                )
            edit = RootMap(here, info.root).rewrite(edit)
            result = await self._rpc.request(
                info.client, "applyEdit", {"edit": edit}, timeout=self.timeout
            )
        command = argument.get("command")
        if isinstance(command, dict):
            result = await self._rpc.request(
                info.client,
                "lsp",
                {
                    "method": "workspace/executeCommand",
                    "params": RootMap(here, info.root).rewrite(
                        {
                            "command": command.get("command"),
                            "arguments": command.get("arguments") or [],
                        }
                    ),
                },
                timeout=self.timeout,
            )
        return result

    def _lines(self, cache: dict[str, LineText | None]) -> Callable[[str], LineText | None]:
        def lines_for(uri: str) -> LineText | None:
            if uri not in cache:
                cache[uri] = self._text_of(uri)
            return cache[uri]

        return lines_for

    def _text_of(self, uri: str) -> LineText | None:
        try:
            key = relative_path(uri, self.root)
        except NotInWorkspace:
            return None
        text = self._session.text(key)
        if text is not None:
            return LineText(str(text))
        on_disk = read_text(self.root / key)
        return LineText(on_disk) if on_disk is not None else None

    async def _fetch_targets(self, result: Any) -> None:
        if self._ensure_file is None:
            return
        for uri in set(uris_in(result)):
            try:
                key = relative_path(uri, self.root)
            except NotInWorkspace:
                continue
            try:
                await self._ensure_file(key)
            except Exception as exc:
                self._log.warning("could not fetch %s from the host: %s", key, exc)

    def _tokens(
        self,
        result: Any,
        doc_uri: str | None,
        info: HostInfo,
        cache: dict[str, LineText | None],
    ) -> Any:
        if not isinstance(result, dict) or not isinstance(result.get("data"), list):
            return result
        data: list[int] = result["data"]
        if self.encoding != info.encoding and doc_uri:
            lines = self._lines(cache)(doc_uri)
            if lines is not None:
                data = convert_semantic_tokens(data, lines, info.encoding, self.encoding)
        legend = info.legend
        if legend is not None:
            data = remap_token_legend(data, legend, STANDARD_LEGEND)
        out = dict(result)
        out["data"] = data
        out.pop("resultId", None)  # the host's: deltas are the guest's own
        return out

    def _token_result(self, uri: str, tokens: Any, previous: Any) -> Any:
        """Full tokens with a result id, or the delta from the ``previous`` result."""
        if not isinstance(tokens, dict) or not isinstance(tokens.get("data"), list):
            return tokens
        data: list[int] = tokens["data"]
        last = self._token_results.pop(uri, None)
        result_id = str(next(self._token_ids))
        self._token_results[uri] = (result_id, data)
        while len(self._token_results) > TOKEN_RESULTS_KEPT:
            del self._token_results[next(iter(self._token_results))]  # the oldest
        if last is not None and previous is not None and last[0] == previous:
            return {"resultId": result_id, "edits": token_delta(last[1], data)}
        return {"resultId": result_id, "data": data}

    # -------------------------------------------------------- notifications

    def notification(self, caller: Caller, method: str, params: Any) -> None:
        """A notification from a peer (``PeerRpc.on_notification``)."""
        info = self.host()
        if info is None or caller.peer != info.client:
            return
        if method == "diagnostics":
            self._diagnostics(info, params)

    def _diagnostics(self, info: HostInfo, params: Any) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("uri"), str):
            return
        here = self.root.absolute().as_uri()
        mapped = RootMap(info.root, here).rewrite(params)
        if self.encoding != info.encoding:
            mapped = convert_positions(
                mapped,
                uri=mapped["uri"],
                lines_for=self._lines({}),
                src=info.encoding,
                dst=self.encoding,
            )
        self._publish("textDocument/publishDiagnostics", mapped)

    async def fetch_diagnostics(self) -> None:
        """Late joiner: the diagnostics the host's server published already."""
        try:
            info = self._host_for_request()
        except RpcError:
            return
        if info is None:
            return
        try:
            published = await self._rpc.request(
                info.client, "diagnostics", {}, timeout=self.timeout
            )
        except RpcError as exc:
            self._log.info("could not get the host's diagnostics: %s", exc.message)
            return
        for params in published if isinstance(published, list) else []:
            self._diagnostics(info, params)


def _doc_uri(params: Any) -> str | None:
    if isinstance(params, dict):
        td = params.get("textDocument")
        if isinstance(td, dict) and isinstance(td.get("uri"), str):
            return str(td["uri"])
        item = params.get("item")
        if isinstance(item, dict) and isinstance(item.get("uri"), str):
            return str(item["uri"])
    return None


def _host_actions(result: Any) -> Any:
    """Code actions whose edit must be applied on the host become our command."""

    def one(action: Any) -> Any:
        if not isinstance(action, dict) or action.get("edit") is None:
            return action
        out = {k: v for k, v in action.items() if k not in ("edit", "command")}
        out["command"] = {
            "title": str(action.get("title") or "apply"),
            "command": CMD_APPLY_HOST_ACTION,
            "arguments": [{"edit": action["edit"], "command": action.get("command")}],
        }
        return out

    if isinstance(result, list):
        return [one(a) for a in result]
    return one(result)
