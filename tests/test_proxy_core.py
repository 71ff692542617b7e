"""Unit and property tests of the proxy's core pieces.

The request channel between peers (two real :class:`PeerRpc` wired back to
back), the language server's edits applied to shared texts, and the server's
view of the session's documents kept in sync by incremental changes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls.guest_features import guest_capabilities, registration_changes
from collab_ls.linetext import LineText
from collab_ls.peer_rpc import REQUEST_CANCELLED, Caller, PeerRpc, RpcError
from collab_ls.proxy_guest import HostInfo
from collab_ls.server_docs import ServerDocs
from collab_ls.session import Session
from collab_ls.units import Encoding
from collab_ls.workspace_edit import EditError, WorkspaceEditor, apply_to_string
from tests.editor_model import position

# ---------------------------------------------------------------- peer RPC


class Wire:
    """Two peers (ids 1 and 2) whose frames go straight to each other."""

    def __init__(self) -> None:
        self.a = PeerRpc(lambda to, data: self._deliver(1, to, data))
        self.b = PeerRpc(lambda to, data: self._deliver(2, to, data))
        self.sent: list[tuple[int, int, bytes]] = []
        self.up = True

    def _deliver(self, sender: int, to: int, data: bytes) -> bool:
        if not self.up:
            return False
        self.sent.append((sender, to, data))
        target = self.b if sender == 1 else self.a
        asyncio.get_running_loop().call_soon(target.receive, sender, sender == 1, data)
        return True


async def test_request_answer_and_errors() -> None:
    wire = Wire()
    seen: list[Caller] = []

    async def serve(caller: Caller, method: str, params: Any) -> Any:
        seen.append(caller)
        if method == "fail":
            raise RpcError(-32602, "bad params", {"why": 1})
        if method == "crash":
            raise RuntimeError("boom")
        return {"echo": params}

    wire.b.on_request = serve
    assert await wire.a.request(2, "echo", [1, "é"], timeout=5) == {"echo": [1, "é"]}
    assert seen == [Caller(1, True)]  # the sender and read-only flag the relay stamped
    with pytest.raises(RpcError) as err:
        await wire.a.request(2, "fail", None, timeout=5)
    assert (err.value.code, err.value.message, err.value.data) == (-32602, "bad params", {"why": 1})
    with pytest.raises(RpcError, match="boom"):
        await wire.a.request(2, "crash", None, timeout=5)


async def test_timeout_cancels_on_the_other_side() -> None:
    wire = Wire()
    cancelled = asyncio.Event()

    async def slow(caller: Caller, method: str, params: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    wire.b.on_request = slow
    with pytest.raises(RpcError, match="within"):
        await wire.a.request(2, "slow", None, timeout=0.2)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert wire.a.pending == 0


async def test_cancelled_waiter_cancels_and_late_answer_is_dropped() -> None:
    wire = Wire()
    release = asyncio.Event()
    outcome: list[str] = []

    async def serve(caller: Caller, method: str, params: Any) -> Any:
        try:
            await release.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return 1

    wire.b.on_request = serve
    task = asyncio.ensure_future(wire.a.request(2, "x", None, timeout=5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert outcome == ["cancelled"]
    # The answer that says "cancelled" came back and was ignored.
    answers = [d for s, _, d in wire.sent if s == 2]
    assert answers and str(REQUEST_CANCELLED).encode() in answers[-1]


async def test_peer_gone_fails_waiters_and_bad_frames_are_skipped() -> None:
    wire = Wire()
    wire.b.on_request = lambda c, m, p: asyncio.sleep(30)  # type: ignore[assignment,return-value]
    task = asyncio.ensure_future(wire.a.request(2, "x", None, timeout=30))
    await asyncio.sleep(0.05)
    for junk in (b"\xff", b"[1]", b'{"method": 5}', b'{"id": {"x": 1}, "method": "m"}', b"{}"):
        wire.a.receive(2, False, junk)  # logged and skipped
    assert wire.a.fail_pending(2, RpcError(-32803, "the host left")) == 1
    with pytest.raises(RpcError, match="host left"):
        await task
    wire.up = False
    with pytest.raises(RpcError, match="not connected"):
        await wire.a.request(2, "x", None, timeout=1)
    await wire.a.close()
    await wire.b.close()


async def test_answers_only_from_the_peer_asked() -> None:
    wire = Wire()
    wire.b.on_request = lambda c, m, p: asyncio.sleep(0.2, result="real")  # type: ignore[assignment,return-value]
    task = asyncio.ensure_future(wire.a.request(2, "x", None, timeout=5))
    await asyncio.sleep(0.05)
    wire.a.receive(3, False, b'{"id": 1, "result": "forged"}')  # a third peer answering
    assert await task == "real"


# ------------------------------------------------------------ server edits


def _edit(text: str, start: int, end: int, new: str, enc: Encoding) -> dict[str, Any]:
    s, e = position(text, start, enc), position(text, end, enc)
    return {
        "range": {
            "start": {"line": s[0], "character": s[1]},
            "end": {"line": e[0], "character": e[1]},
        },
        "newText": new,
    }


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab中😀é\n\r ", max_size=25),
    st.lists(
        st.tuples(st.integers(0, 25), st.integers(0, 4), st.text("xy😀\n", max_size=3)), max_size=5
    ),
    st.sampled_from(list(Encoding)),
)
def test_text_edits_apply_like_lsp_says(
    text: str, raw: list[tuple[int, int, str]], enc: Encoding
) -> None:
    """Non-overlapping edits against the original text, in any order given."""
    spans: list[tuple[int, int, str]] = []
    taken = -1
    for start, length, new in sorted(raw):
        start = min(start, len(text))
        if start <= taken:
            continue
        end = min(start + length, len(text))
        if "\r" in text[max(0, start - 1) : end + 1]:
            continue  # an LSP position never splits \r\n; keep edits clear of it
        spans.append((start, end, new))
        taken = end if end > start else start
    expected = text
    for start, end, new in sorted(spans, reverse=True):
        expected = expected[:start] + new + expected[end:]
    edits = [_edit(text, s, e, n, enc) for s, e, n in spans]
    assert apply_to_string(text, list(reversed(edits)), enc) == expected
    # And the same edits applied to a shared text, in one transaction.
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = Session(doc)
    session.seed("a.py", text)
    editor = WorkspaceEditor(session, Path("/r"), enc, __import__("logging").getLogger())
    editor.text_edits("file:///r/a.py", edits)
    assert str(session.text("a.py")) == expected


def test_workspace_edit_on_disk_and_refusals(tmp_path: Path) -> None:
    import logging

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = Session(doc)
    session.seed("open.py", "a = 1\n")
    (tmp_path / "closed.py").write_text("b = 2\n")
    editor = WorkspaceEditor(session, tmp_path, Encoding.UTF16, logging.getLogger())
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}}
    report = editor.workspace_edit(
        {
            "changes": {
                (tmp_path / "open.py").as_uri(): [{"range": rng, "newText": "x"}],
                (tmp_path / "closed.py").as_uri(): [{"range": rng, "newText": "y"}],
            }
        }
    )
    assert str(session.text("open.py")) == "x = 1\n"
    assert (tmp_path / "closed.py").read_text() == "y = 2\n"
    assert report.documents == ["open.py"] and report.on_disk == ["closed.py"]
    editor.workspace_edit(
        {
            "documentChanges": [
                {
                    "kind": "rename",
                    "oldUri": (tmp_path / "closed.py").as_uri(),
                    "newUri": (tmp_path / "sub" / "moved.py").as_uri(),
                }
            ]
        }
    )
    assert (tmp_path / "sub" / "moved.py").read_text() == "y = 2\n"
    for bad in (
        {"changes": {"file:///etc/passwd": [{"range": rng, "newText": "x"}]}},
        {"changes": {(tmp_path / ".." / "x.py").as_uri(): [{"range": rng, "newText": "x"}]}},
        {"documentChanges": [{"kind": "delete", "uri": "file:///etc/hosts"}]},
        {"documentChanges": [{"kind": "explode", "uri": (tmp_path / "a").as_uri()}]},
        {"changes": {(tmp_path / "open.py").as_uri(): [{"range": "junk", "newText": 1}]}},
    ):
        with pytest.raises(EditError):
            editor.workspace_edit(bad)
    assert str(session.text("open.py")) == "x = 1\n"


# ------------------------------------------------------------ server docs


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ab中😀é\n ", max_size=20),
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 30), st.text("x😀\n中", min_size=1, max_size=3)),
        max_size=8,
    ),
    st.sampled_from(list(Encoding)),
)
def test_server_sees_what_the_session_holds(
    text: str, ops: list[tuple[bool, int, str]], enc: Encoding
) -> None:
    """Replaying the didOpen and incremental didChanges gives the session's text."""
    import logging

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = Session(doc)
    sent: list[tuple[str, Any]] = []
    docs = ServerDocs(
        session, Path("/r"), enc, lambda m, p: sent.append((m, p)), logging.getLogger()
    )
    docs.start()
    session.seed("f.py", text)
    shared = session.text("f.py")
    assert shared is not None
    for insert, at, new in ops:
        current = str(shared)
        at = min(at, len(current))
        b = len(current[:at].encode())
        if insert or not current:
            shared.insert(b, new)
        else:
            at = min(at, len(current) - 1)
            b = len(current[:at].encode())
            del shared[b : b + len(current[at].encode())]
    # Replay what the server was sent.
    model: LineText | None = None
    for method, params in sent:
        if method == "textDocument/didOpen":
            model = LineText(params["textDocument"]["text"])
        elif method == "textDocument/didChange":
            assert model is not None
            for change in params["contentChanges"]:
                if "range" not in change:
                    model = LineText(change["text"])
                    continue
                r = change["range"]
                s = model.to_offset(r["start"]["line"], r["start"]["character"], enc)
                e = model.to_offset(r["end"]["line"], r["end"]["character"], enc)
                model.replace(s, e, change["text"])
    assert model is not None and model.text() == str(shared)
    versions = [p["textDocument"]["version"] for m, p in sent]
    assert versions == sorted(versions)
    docs.stop()


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab(),中😀é ", max_size=20),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=4),
    st.sampled_from(list(Encoding)),
    st.sampled_from(list(Encoding)),
)
def test_signature_label_offsets_follow_the_encoding(
    label: str, spans: list[tuple[int, int]], src: Encoding, dst: Encoding
) -> None:
    """Parameter labels given as offsets name the same characters after conversion."""
    from collab_ls.lsp_json import convert_signature_offsets
    from collab_ls.units import index_to_units

    spans = [(min(a, b, len(label)), min(max(a, b), len(label))) for a, b in spans]
    params = [
        {"label": [index_to_units(label, a, src), index_to_units(label, b, src)]} for a, b in spans
    ]
    help_ = {"signatures": [{"label": label, "parameters": params}], "activeSignature": 0}
    out = convert_signature_offsets(help_, src, dst)
    got = [p["label"] for p in out["signatures"][0]["parameters"]]
    assert got == [[index_to_units(label, a, dst), index_to_units(label, b, dst)] for a, b in spans]
    assert help_["signatures"][0]["parameters"] == params  # input untouched


def test_command_line_of_the_shared_language_server(capsys: pytest.CaptureFixture[str]) -> None:
    from collab_ls.options import parse_args

    opts = parse_args(["--share", "--name", "ann", "--", "pylsp", "--log-file", "x", "-v"])
    assert opts.server_command == ("pylsp", "--log-file", "x", "-v")
    assert opts.name == "ann" and opts.log_file is None  # flags after -- are the server's
    assert parse_args(["--share"]).server_command == ()
    url = "ws://127.0.0.1:1/room?secret=s"
    opts = parse_args(["--join", url, "--workspace", "/tmp/w", "--request-timeout", "2.5"])
    assert opts.workspace == Path("/tmp/w") and opts.request_timeout == 2.5
    for bad, why in (
        (["--join", url, "--", "pylsp"], "goes with --share"),
        (["--share", "--workspace", "/tmp/w"], "--workspace goes with --join"),
        (["--join", url, "--request-timeout", "0"], "must be positive"),
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)
        assert why in capsys.readouterr().err


# ------------------------------------------------- a guest's capabilities


def _host_info(caps: dict[str, Any], **extra: Any) -> HostInfo:
    raw = {"client": 7, "root": "file:///srv/p", "state": "running"}
    return HostInfo({**raw, "capabilities": json.dumps(caps), **extra})


def test_guest_offers_what_the_hosts_server_has() -> None:
    server = {
        "hoverProvider": True,
        "completionProvider": {"triggerCharacters": ["."], "resolveProvider": False},
        "renameProvider": True,
        "documentFormattingProvider": {"documentSelector": [{"pattern": "/srv/p/**"}]},
        "codeLensProvider": {"resolveProvider": True},
        "semanticTokensProvider": {
            "legend": {"tokenTypes": ["x"], "tokenModifiers": []},
            "full": {"delta": True},
        },
        "executeCommandProvider": {"commands": ["srv.fix"]},
        "textDocumentSync": 1,
        "inlayHintProvider": True,
    }
    caps = guest_capabilities(_host_info(server))
    assert caps["completionProvider"] == {"triggerCharacters": ["."], "resolveProvider": False}
    assert caps["renameProvider"] is True
    # The host's paths and ids mean nothing to a guest; unproxied resolves are off.
    assert caps["documentFormattingProvider"] == {}
    assert caps["codeLensProvider"] == {"resolveProvider": False}
    # Tokens come remapped to the standard legend, full results only.
    tokens = caps["semanticTokensProvider"]
    assert tokens["legend"]["tokenTypes"][0] == "namespace"
    assert tokens["full"] == {"delta": True} and tokens["range"] is False  # deltas: the guest's
    # Nothing the server lacks, nothing collab-ls decides itself, no commands unless allowed.
    assert "definitionProvider" not in caps and "callHierarchyProvider" not in caps
    assert not {"textDocumentSync", "inlayHintProvider", "executeCommandProvider"} & caps.keys()
    allowed = guest_capabilities(_host_info(server, guest_commands=True))
    assert allowed["executeCommandProvider"] == {"commands": ["srv.fix"]}
    json.dumps(caps)  # ready for the wire


def test_guest_capabilities_of_registrations_no_server_and_no_host() -> None:
    registered = _host_info({"hoverProvider": True}, registrations='["textDocument/formatting"]')
    assert guest_capabilities(registered)["documentFormattingProvider"] is True
    assert guest_capabilities(_host_info({}, state="none")) == {}
    broad = guest_capabilities(None)  # the host did not show up in time: everything
    assert broad["definitionProvider"] and broad["callHierarchyProvider"]
    broad["completionProvider"]["triggerCharacters"].clear()  # a copy, not the template
    assert guest_capabilities(None)["completionProvider"]["triggerCharacters"]
    json.dumps(broad)


def test_features_the_server_gains_later_are_registered_with_the_editor() -> None:
    client = {
        "textDocument": {
            "rangeFormatting": {"dynamicRegistration": True},
            "rename": {"dynamicRegistration": False},
            "completion": {"dynamicRegistration": True},
        },
        "workspace": {"executeCommand": {"dynamicRegistration": True}},
    }
    static = {"hoverProvider": True, "completionProvider": {"triggerCharacters": ["."]}}
    now = guest_capabilities(
        _host_info(
            {
                "documentRangeFormattingProvider": {"documentSelector": [{"pattern": "/srv/**"}]},
                "renameProvider": True,
                "completionProvider": {"triggerCharacters": [".", ">"]},
                "executeCommandProvider": {"commands": ["srv.fix"]},
            },
            guest_commands=True,
        )
    )
    register, unregister = registration_changes(static, {}, now, client)
    # Offered statically: never again (completion); the editor can't register rename.
    assert unregister == []
    assert register == [
        {
            "id": "collab-host:documentRangeFormattingProvider",
            "method": "textDocument/rangeFormatting",
            "registerOptions": {"documentSelector": None},
        },
        {
            "id": "collab-host:executeCommandProvider",
            "method": "workspace/executeCommand",
            "registerOptions": {"commands": ["srv.fix"]},
        },
    ]
    registered = {
        "documentRangeFormattingProvider": now["documentRangeFormattingProvider"],
        "executeCommandProvider": now["executeCommandProvider"],
    }
    assert registration_changes(static, registered, now, client) == ([], [])
    # The host restarts with no server: what was registered is withdrawn.
    gone = guest_capabilities(_host_info({}, state="none"))
    register, unregister = registration_changes(static, registered, gone, client)
    assert register == []
    assert [u["method"] for u in unregister] == [
        "textDocument/rangeFormatting",
        "workspace/executeCommand",
    ]


# ------------------------------------- the server's edits, moved past peers' typing


@st.composite
def _disjoint_replacements(draw: st.DrawFn, text: str) -> list[tuple[int, int, str, bool]]:
    """Replacements at increasing code-point ranges of ``text``, never touching each
    other, each marked as the server's edit (True) or a peer's change (False)."""
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    out: list[tuple[int, int, str, bool]] = []
    last_end = -1
    for i in range(0, len(cuts) - 1, 2):
        start, end = cuts[i], cuts[i + 1]
        if start <= last_end:  # keep a gap: touching changes are conflicts
            continue
        # Line breaks \n and \r\n (a lone \r typed before a \n would join it: see lsp_rebase).
        new = "".join(
            draw(st.lists(st.sampled_from(["x", "y", "😀", "\n", "\r\n", "中"]), max_size=3))
        )
        out.append((start, end, new, draw(st.booleans())))
        last_end = end
    return out


@settings(max_examples=300, deadline=None)
@given(st.text("ab\n中😀é", max_size=30), st.data(), st.sampled_from(list(Encoding)))
def test_server_edits_land_where_meant_after_peers_typed(
    text: str, data: st.DataObject, enc: Encoding
) -> None:
    """The server computes edits on one version; peers change other places meanwhile,
    one change at a time: rebased, the edits give the text both intended."""
    import logging

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = Session(doc)
    docs = ServerDocs(session, Path("/r"), enc, lambda m, p: None, logging.getLogger())
    docs.start()
    shared = session.seed("f.py", text)
    editor = WorkspaceEditor(session, Path("/r"), enc, logging.getLogger(), rebase=docs.rebase)
    replacements = data.draw(_disjoint_replacements(text))
    since = docs.versions()
    # The server's edits, as positions in the text it saw.
    lines = LineText(text)

    def at(index: int) -> dict[str, int]:
        line, char = lines.to_position(len(text[:index].encode()), enc)
        return {"line": line, "character": char}

    edits = [
        {"range": {"start": at(s), "end": at(e)}, "newText": new}
        for s, e, new, server in replacements
        if server
    ]
    # Peers' changes land first, last one first (each its own transaction).
    for s, e, new, server in reversed(replacements):
        if not server:
            b0, b1 = len(text[:s].encode()), len(text[:e].encode())
            with doc.transaction():
                if b1 > b0:
                    del shared[b0:b1]
                if new:
                    shared.insert(b0, new)
    editor.text_edits("file:///r/f.py", edits, since=since["f.py"])
    expected = text
    for s, e, new, _ in reversed(replacements):
        expected = expected[:s] + new + expected[e:]
    assert str(shared) == expected
    docs.stop()


def test_a_server_edit_a_peer_touched_is_dropped_and_unknown_history_applies_as_is() -> None:
    import logging

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = Session(doc)
    docs = ServerDocs(session, Path("/r"), Encoding.UTF16, lambda m, p: None, logging.getLogger())
    docs.start()
    shared = session.seed("f.py", "alpha beta\n")
    since = docs.versions()["f.py"]
    edits = [
        {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}},
         "newText": "ALPHA"},
        {"range": {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 10}},
         "newText": "BETA"},
    ]  # fmt: skip
    shared.insert(8, "X")  # inside "beta"
    assert [e["newText"] for e in docs.rebase("f.py", since, edits)] == ["ALPHA"]
    # A version whose changes are not known (before the document was opened): as they are.
    assert docs.rebase("f.py", since - 5, edits) == edits
    docs.stop()
