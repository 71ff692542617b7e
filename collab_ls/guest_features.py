"""What a guest's editor is offered of the host's language server, and when that changes.

A guest learns the host's server from the session's ``host`` map
(:class:`~collab_ls.proxy_guest.HostInfo`). At ``initialize`` its editor is
offered exactly that server's features (:func:`guest_capabilities`); what the
server gains later (a registration of its own, or a server the host starts
after the guest joined) is registered with the editor dynamically, for the
features the editor can register, and withdrawn again when the server loses
it (:func:`registration_changes`). :class:`GuestFeatures` is the thin shell
that watches the ``host`` map and sends the editor those registrations.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pycrdt

from collab_ls.lsp_json import STANDARD_LEGEND
from collab_ls.proxy_guest import CAPABILITY, HostInfo

__all__ = [
    "BROAD_CAPABILITIES",
    "FEATURES",
    "GuestFeatures",
    "guest_capabilities",
    "knows_server",
    "registration_changes",
]

log = logging.getLogger(__name__)

_COMPLETION = {
    "resolveProvider": True,
    "triggerCharacters": [".", ":", ">", "(", "[", "'", '"', "/", "@", "<", "#"],
}
_SIGNATURE_HELP = {"triggerCharacters": ["(", ","], "retriggerCharacters": [")"]}
_LEGEND = {kind: list(names) for kind, names in STANDARD_LEGEND.items()}  # JSON-ready
_SEMANTIC_TOKENS = {"legend": _LEGEND, "full": {"delta": True}, "range": True}

#: What a guest offers before it knows the host's server (it did not show up in
#: time): broad on purpose, what the server lacks gets the empty answer.
BROAD_CAPABILITIES: Mapping[str, Any] = {
    "hoverProvider": True,
    "completionProvider": _COMPLETION,
    "signatureHelpProvider": _SIGNATURE_HELP,
    "definitionProvider": True,
    "declarationProvider": True,
    "typeDefinitionProvider": True,
    "implementationProvider": True,
    "referencesProvider": True,
    "documentSymbolProvider": True,
    "documentHighlightProvider": True,
    "codeActionProvider": {"resolveProvider": True},
    "codeLensProvider": {"resolveProvider": False},
    "documentFormattingProvider": True,
    "documentRangeFormattingProvider": True,
    "renameProvider": {"prepareProvider": True},
    "foldingRangeProvider": True,
    "selectionRangeProvider": True,
    "documentLinkProvider": {"resolveProvider": False},
    "callHierarchyProvider": True,
    "typeHierarchyProvider": True,
    "workspaceSymbolProvider": True,
    "semanticTokensProvider": _SEMANTIC_TOKENS,
}

#: Each server capability a guest can offer: the method it is registered under,
#: and where the editor's ``initialize`` says it can register it dynamically.
FEATURES: Mapping[str, tuple[str, tuple[str, str]]] = {
    "hoverProvider": ("textDocument/hover", ("textDocument", "hover")),
    "completionProvider": ("textDocument/completion", ("textDocument", "completion")),
    "signatureHelpProvider": ("textDocument/signatureHelp", ("textDocument", "signatureHelp")),
    "definitionProvider": ("textDocument/definition", ("textDocument", "definition")),
    "declarationProvider": ("textDocument/declaration", ("textDocument", "declaration")),
    "typeDefinitionProvider": ("textDocument/typeDefinition", ("textDocument", "typeDefinition")),
    "implementationProvider": ("textDocument/implementation", ("textDocument", "implementation")),
    "referencesProvider": ("textDocument/references", ("textDocument", "references")),
    "documentSymbolProvider": ("textDocument/documentSymbol", ("textDocument", "documentSymbol")),
    "documentHighlightProvider": (
        "textDocument/documentHighlight",
        ("textDocument", "documentHighlight"),
    ),
    "codeActionProvider": ("textDocument/codeAction", ("textDocument", "codeAction")),
    "codeLensProvider": ("textDocument/codeLens", ("textDocument", "codeLens")),
    "documentFormattingProvider": ("textDocument/formatting", ("textDocument", "formatting")),
    "documentRangeFormattingProvider": (
        "textDocument/rangeFormatting",
        ("textDocument", "rangeFormatting"),
    ),
    "documentOnTypeFormattingProvider": (
        "textDocument/onTypeFormatting",
        ("textDocument", "onTypeFormatting"),
    ),
    "renameProvider": ("textDocument/rename", ("textDocument", "rename")),
    "semanticTokensProvider": ("textDocument/semanticTokens", ("textDocument", "semanticTokens")),
    "foldingRangeProvider": ("textDocument/foldingRange", ("textDocument", "foldingRange")),
    "selectionRangeProvider": ("textDocument/selectionRange", ("textDocument", "selectionRange")),
    "documentLinkProvider": ("textDocument/documentLink", ("textDocument", "documentLink")),
    "callHierarchyProvider": (
        "textDocument/prepareCallHierarchy",
        ("textDocument", "callHierarchy"),
    ),
    "typeHierarchyProvider": (
        "textDocument/prepareTypeHierarchy",
        ("textDocument", "typeHierarchy"),
    ),
    "workspaceSymbolProvider": ("workspace/symbol", ("workspace", "symbol")),
    "diagnosticProvider": ("textDocument/diagnostic", ("textDocument", "diagnostic")),
    "executeCommandProvider": ("workspace/executeCommand", ("workspace", "executeCommand")),
}

#: Keys of registration options that name the host's side (its paths, its ids).
_HOST_ONLY_OPTIONS = ("documentSelector", "id")
#: Resolve methods guests are not proxied: never advertise them.
_UNPROXIED_RESOLVE = ("codeLensProvider", "documentLinkProvider", "inlayHintProvider")
#: The id prefix of the registrations a guest makes with its editor.
REGISTRATION_PREFIX = "collab-host:"


def knows_server(raw: Mapping[str, Any]) -> bool:
    """Whether the session's ``host`` map tells the host's server (or that there is none)."""
    return bool(raw.get("root")) and (bool(raw.get("capabilities")) or raw.get("state") == "none")


def guest_capabilities(info: HostInfo | None = None) -> dict[str, Any]:
    """What a guest's collab-ls offers its editor, from the host's server's capabilities.

    ``info`` is the host as the session shows it; ``None`` if it did not show up
    in time, and then the broad :data:`BROAD_CAPABILITIES`. A host with no
    language server offers none of its features. Semantic tokens always use the
    standard legend (the host's are remapped); the server's commands are offered
    only if the host lets guests run them.
    """
    if info is None:
        broad: dict[str, Any] = json.loads(json.dumps(BROAD_CAPABILITIES))  # a deep copy
        return broad
    if info.state == "none":
        return {}
    out: dict[str, Any] = {}
    registered = {CAPABILITY.get(m) for m in info.registered}
    keys = {key for method, key in CAPABILITY.items() if method != "workspace/executeCommand"}
    for key in sorted(keys - {"inlayHintProvider"}):  # inlay hints: the shell merges both
        value = info.capabilities.get(key)
        if not value:
            if key not in registered:
                continue
            value = BROAD_CAPABILITIES.get(key, True)  # registered by the server, options unknown
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _HOST_ONLY_OPTIONS}
            if key in _UNPROXIED_RESOLVE:
                value["resolveProvider"] = False
        out[key] = value
    if "semanticTokensProvider" in out:
        server = out["semanticTokensProvider"]
        server = server if isinstance(server, dict) else {}
        out["semanticTokensProvider"] = {
            "legend": _LEGEND,
            # Deltas are made by the guest itself (from the host's full tokens).
            "full": {"delta": True} if server.get("full", True) else False,
            "range": bool(server.get("range", False)),
        }
    pull = out.get("diagnosticProvider")
    if isinstance(pull, dict):  # per document only: workspace/diagnostic is not proxied
        out["diagnosticProvider"] = {**pull, "workspaceDiagnostics": False}
    commands = info.capabilities.get("executeCommandProvider")
    if info.guest_commands and isinstance(commands, dict) and commands.get("commands"):
        out["executeCommandProvider"] = {"commands": list(commands["commands"])}
    return out


def can_register(client_capabilities: Mapping[str, Any], key: str) -> bool:
    """Whether the editor's ``initialize`` capabilities let it register ``key`` dynamically."""
    feature = FEATURES.get(key)
    if feature is None:
        return False
    section, name = feature[1]
    group = client_capabilities.get(section)
    caps = group.get(name) if isinstance(group, Mapping) else None
    return isinstance(caps, Mapping) and caps.get("dynamicRegistration") is True


def registration_changes(
    static: Mapping[str, Any],
    registered: Mapping[str, Any],
    now: Mapping[str, Any],
    client_capabilities: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The registrations and unregistrations that bring the editor up to ``now``.

    ``static`` is what the ``initialize`` result offered (never withdrawn),
    ``registered`` the options registered with the editor since, by capability
    key, and ``now`` what :func:`guest_capabilities` gives for the host today.
    Only features the editor can register dynamically are touched.
    """
    register: list[dict[str, Any]] = []
    unregister: list[dict[str, Any]] = []
    for key in sorted(FEATURES):
        if key in static or not can_register(client_capabilities, key):
            continue
        method = FEATURES[key][0]
        wanted, had = now.get(key), registered.get(key)
        if had is not None and wanted != had:
            unregister.append({"id": REGISTRATION_PREFIX + key, "method": method})
        if wanted not in (None, False) and wanted != had:  # options, even {}, mean "yes"
            options = dict(wanted) if isinstance(wanted, Mapping) else {}
            if method.startswith("textDocument/"):
                options["documentSelector"] = None  # the editor's own selector
            register.append(
                {"id": REGISTRATION_PREFIX + key, "method": method, "registerOptions": options}
            )
    return register, unregister


EditorRequest = Callable[[str, Any], Awaitable[Any]]


def _key(registration: Mapping[str, Any]) -> str:
    """The capability key a registration of ours stands for (its id names it)."""
    return str(registration["id"]).removeprefix(REGISTRATION_PREFIX)


class GuestFeatures:
    """Keeps a guest's editor registered for the features the host's server has now."""

    def __init__(
        self,
        host_map: pycrdt.Map[Any],
        *,
        static: Mapping[str, Any],
        client_capabilities: Mapping[str, Any],
        request: EditorRequest,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._host = host_map
        self._static = dict(static)
        self._client = client_capabilities
        self._request = request
        self._log = logger
        self.registered: dict[str, Any] = {}
        """What this guest registered with its editor, by capability key."""
        self._sub: pycrdt.Subscription | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sub = self._host.observe(lambda _event: self._wake.set())
        self._task = asyncio.ensure_future(self._loop())
        self._wake.set()  # the host may have changed since initialize

    async def stop(self) -> None:
        if self._sub is not None:
            self._host.unobserve(self._sub)
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            raw = dict(self._host.items())
            if not knows_server(raw):
                continue  # no host yet, or one still starting its server
            now = guest_capabilities(HostInfo(raw))
            register, unregister = registration_changes(
                self._static, self.registered, now, self._client
            )
            await self._send(register, unregister, now)

    async def _send(
        self,
        register: list[dict[str, Any]],
        unregister: list[dict[str, Any]],
        now: Mapping[str, Any],
    ) -> None:
        try:
            if unregister:
                await self._request("client/unregisterCapability", {"unregisterations": unregister})
                for item in unregister:
                    self.registered.pop(_key(item), None)
            if register:
                await self._request("client/registerCapability", {"registrations": register})
                for item in register:
                    self.registered[_key(item)] = now[_key(item)]
        except Exception as exc:  # the editor refused or is gone: try again on the next change
            self._log.warning("the editor did not take the host server's features: %s", exc)
            return
        if register or unregister:
            self._log.info(
                "the host's server changed: registered %s, withdrew %s",
                [r["method"] for r in register] or "nothing",
                [r["method"] for r in unregister] or "nothing",
            )
