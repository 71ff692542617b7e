"""Tests for collab_ls.lsp_json: URI roots, path safety, position encodings, semantic tokens."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls.line_index import split_lines
from collab_ls.linetext import LineText
from collab_ls.lsp_json import (
    STANDARD_LEGEND,
    OutsideRoot,
    RootMap,
    convert_positions,
    convert_semantic_tokens,
    path_to_uri,
    relative_path,
    remap_token_legend,
    uri_to_path,
    uris_in,
)
from collab_ls.lsp_tokens import token_delta
from collab_ls.units import Encoding, index_to_units

U8, U16, U32 = Encoding.UTF8, Encoding.UTF16, Encoding.UTF32
ENCODINGS = [U8, U16, U32]

HOST = "file:///srv/alice/proj"
GUEST = "file:///home/bob/proj"


def pos(line: int, character: int) -> dict[str, int]:
    return {"line": line, "character": character}


def rng(l0: int, c0: int, l1: int, c1: int) -> dict[str, Any]:
    return {"start": pos(l0, c0), "end": pos(l1, c1)}


# -- RootMap ---------------------------------------------------------------------------


def test_rootmap_rewrites_values_keys_and_markdown_links() -> None:
    hover = {
        "contents": {
            "kind": "markdown",
            "value": f"def f()\n\nSee [a.py]({HOST}/a.py#L3) and <{HOST}/pkg/b.py>.",
        },
        "range": rng(2, 4, 2, 5),
    }
    out = RootMap(HOST, GUEST).rewrite(hover)
    assert out["contents"]["value"] == (
        f"def f()\n\nSee [a.py]({GUEST}/a.py#L3) and <{GUEST}/pkg/b.py>."
    )
    assert out["range"] == hover["range"]

    edit: dict[str, Any] = {
        "changes": {f"{HOST}/a.py": [{"range": rng(0, 0, 0, 1), "newText": "x"}]},
        "documentChanges": [
            {"kind": "create", "uri": f"{HOST}/new.py"},
            {"kind": "rename", "oldUri": f"{HOST}/old.py", "newUri": f"{HOST}/sub/new.py"},
        ],
    }
    before = copy.deepcopy(edit)
    out = RootMap(HOST, GUEST).rewrite(edit)
    assert edit == before  # not mutated
    assert list(out["changes"]) == [f"{GUEST}/a.py"]
    assert out["documentChanges"] == [
        {"kind": "create", "uri": f"{GUEST}/new.py"},
        {"kind": "rename", "oldUri": f"{GUEST}/old.py", "newUri": f"{GUEST}/sub/new.py"},
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (HOST, GUEST),
        (f"{HOST}/", f"{GUEST}/"),
        (f"{HOST}/a.py", f"{GUEST}/a.py"),
        (f"{HOST}#L1", f"{GUEST}#L1"),
        ("file://localhost/srv/alice/proj/a.py", f"{GUEST}/a.py"),
        ("FILE:///srv/alice/proj/a.py", f"{GUEST}/a.py"),
        ("file:///srv/%61lice/proj/a.py", f"{GUEST}/a.py"),  # %61 is "a"
        # Path-segment boundary: a sibling with the root as a prefix is not under it.
        ("file:///srv/alice/project2/a.py", "file:///srv/alice/project2/a.py"),
        ("file:///srv/alice/proj2", "file:///srv/alice/proj2"),
        ("file:///srv/Alice/proj/a.py", "file:///srv/Alice/proj/a.py"),
        ("file:///srv/alice/pro%2Fj/a.py", "file:///srv/alice/pro%2Fj/a.py"),  # %2F is no "/"
        ("notfile:///srv/alice/proj/a.py", "notfile:///srv/alice/proj/a.py"),
        ("untitled:Untitled-1", "untitled:Untitled-1"),
        # Embedded, only "root/..." is unambiguous.
        (f"see {HOST} here", f"see {HOST} here"),
    ],
)
def test_rootmap_matching(uri: str, expected: str) -> None:
    assert RootMap(f"{HOST}/", GUEST).rewrite(uri) == expected


def test_rootmap_compares_percent_decoded_and_keeps_the_rest_as_written() -> None:
    m = RootMap("file:///tmp/a%20b", "file:///home/c%C3%A9/w/")
    assert m.rewrite("file:///tmp/a b/x y.py") == "file:///home/c%C3%A9/w/x y.py"
    assert m.rewrite("file:///tmp/a%20b/x%20y.py") == "file:///home/c%C3%A9/w/x%20y.py"
    assert m.rewrite("file:///tmp/a%2520b/x.py") == "file:///tmp/a%2520b/x.py"  # "a%20b"
    back = m.reverse()
    assert back.from_root == "file:///home/c%C3%A9/w/"
    assert back.rewrite("file:///home/cé/w/x.py") == "file:///tmp/a%20b/x.py"
    assert back.rewrite("file:///home/c%c3%a9/w/x.py") == "file:///tmp/a%20b/x.py"


def test_rootmap_windows_drive_letter_case() -> None:
    m = RootMap("file:///C:/Users/bob/proj", HOST)
    assert m.rewrite("file:///c%3A/Users/bob/proj/a.py") == f"{HOST}/a.py"
    assert m.rewrite("file:///c:/users/bob/proj/a.py") == "file:///c:/users/bob/proj/a.py"


def test_rootmap_rejects_non_file_roots() -> None:
    with pytest.raises(ValueError, match="not a file"):
        RootMap("https://example.com/proj", HOST)
    with pytest.raises(ValueError, match="host"):
        RootMap(HOST, "file://server/share/proj")


def test_path_uri_helpers(tmp_path: Path) -> None:
    p = tmp_path / "a b#c%é" / "x.py"
    assert path_to_uri(p) == p.as_uri()
    assert uri_to_path(p.as_uri()) == p
    assert uri_to_path("file://localhost/tmp/x") == Path("/tmp/x")
    with pytest.raises(ValueError):
        uri_to_path("https://example.com/x")


_SEG = st.text(alphabet="ab é漢%#?-", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))
_SEGS = st.lists(_SEG, min_size=1, max_size=3)


@st.composite
def _rootmap_case(draw: st.DrawFn) -> tuple[str, str, Any]:
    from_root = Path("/r", *draw(_SEGS)).as_uri()
    to_root = Path("/r", *draw(_SEGS)).as_uri()  # may nest in from_root, or equal it
    if draw(st.booleans()):
        from_root += "/"

    def under(segs: list[str]) -> str:
        return from_root.rstrip("/") + Path("/", *segs).as_uri()[len("file://") :]

    linkable = st.one_of(
        _SEGS.map(under),
        _SEGS.map(lambda s: Path("/o", *s).as_uri()),  # outside both roots
    )
    # The root itself only as a whole string: embedded, only "root/..." is rewritten.
    uri = st.one_of(linkable, st.just(from_root.rstrip("/")))
    text = st.one_of(
        st.text(alphabet="xyz ()[]#\n", max_size=8),
        uri,
        st.tuples(linkable, _SEG).map(lambda t: f"see [{t[1]}]({t[0]}#L3) or <{t[0]}>"),
    )
    key = st.one_of(st.sampled_from(["uri", "changes", "range"]), uri)
    value = st.recursive(
        st.one_of(text, st.integers(), st.none(), st.booleans()),
        lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(key, kids, max_size=3)),
        max_leaves=12,
    )
    return from_root, to_root, draw(value)


@given(_rootmap_case())
@settings(max_examples=300)
def test_rootmap_round_trip(case: tuple[str, str, Any]) -> None:
    from_root, to_root, obj = case
    m = RootMap(from_root, to_root)
    there = m.rewrite(obj)
    assert m.reverse().rewrite(there) == obj


@given(_SEGS, _SEGS, _SEGS, st.booleans())
def test_rootmap_moves_decoded_path(a: list[str], b: list[str], rel: list[str], raw: bool) -> None:
    src, dst = Path("/r", *a), Path("/h", *b)
    m = RootMap(src.as_uri(), dst.as_uri())
    if raw:  # an editor that does not percent-encode: the part after the root is kept as is
        out = m.rewrite("file://" + str(src / Path(*rel)))
        assert out == dst.as_uri() + "/" + "/".join(rel)
    else:
        assert uri_to_path(m.rewrite((src / Path(*rel)).as_uri())) == dst / Path(*rel)


def test_uris_in_finds_values_and_keys() -> None:
    params = {
        "textDocument": {"uri": f"{GUEST}/a.py"},
        "edit": {"changes": {"file:///etc/passwd": []}},
        "arguments": ["FILE:///x", "untitled:1", f"text with {GUEST}/b.py inside", 3],
    }
    assert sorted(uris_in(params)) == sorted([f"{GUEST}/a.py", "file:///etc/passwd", "FILE:///x"])
    assert list(uris_in("file:///a")) == ["file:///a"]
    assert list(uris_in(None)) == []


# -- relative_path ---------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x = 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    (root / "out_dir").symlink_to(outside)
    (root / "out_file").symlink_to(outside / "secret.txt")
    (root / "dangling").symlink_to(outside / "not-yet.txt")
    (root / "in_link").symlink_to(root / "pkg")
    (root / "loop").symlink_to(root / "loop")
    return root


def test_relative_path_inside(tree: Path) -> None:
    assert relative_path(tree, (tree / "pkg" / "a.py").as_uri()) == "pkg/a.py"
    assert relative_path(tree, (tree / "new" / "deep" / "b.py").as_uri()) == "new/deep/b.py"
    assert relative_path(tree, tree.as_uri()) == "."
    assert relative_path(tree, tree.as_uri() + "/pkg/./x/../a.py") == "pkg/a.py"
    assert relative_path(tree, tree.as_uri() + "/in_link/a.py") == "in_link/a.py"
    assert relative_path(tree, "file://localhost" + str(tree / "pkg" / "a%20b.py")) == "pkg/a b.py"


def test_relative_path_through_a_symlinked_root(tree: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(tree)
    assert relative_path(alias, (tree / "pkg" / "a.py").as_uri()) == "pkg/a.py"
    assert relative_path(alias, (alias / "pkg" / "a.py").as_uri()) == "pkg/a.py"
    # The URI must name the root as the root is given or as it resolves, not by another alias.
    with pytest.raises(OutsideRoot, match="outside"):
        relative_path(tree, (alias / "pkg" / "a.py").as_uri())


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("/../outside/secret.txt", r"'\.\.' leads out"),
        ("/pkg/../../outside/secret.txt", r"'\.\.' leads out"),
        ("/%2e%2e/outside/secret.txt", r"'\.\.' leads out"),
        ("/out_dir/secret.txt", "symbolic link"),
        ("/out_dir/new/file.txt", "symbolic link"),
        ("/out_file", "symbolic link"),
        ("/dangling", "symbolic link"),
        ("/loop/x", "symbolic link|cannot be resolved"),
    ],
)
def test_relative_path_escapes(tree: Path, suffix: str, message: str) -> None:
    with pytest.raises(OutsideRoot, match=message):
        relative_path(tree, tree.as_uri() + suffix)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///etc/passwd", "outside the workspace root"),
        ("https://example.com/root/a.py", "not a file"),
        ("untitled:Untitled-1", "not a file"),
        ("file://evil.example/root/a.py", "host"),
        ("file:///root/a%00.py", "NUL"),
        ("file:relative/a.py", "absolute path"),
    ],
)
def test_relative_path_rejects(tree: Path, uri: str, message: str) -> None:
    with pytest.raises(OutsideRoot, match=message):
        relative_path(tree, uri)
    assert issubclass(OutsideRoot, ValueError)


def test_relative_path_sibling_with_root_prefix(tree: Path) -> None:
    sibling = tree.parent / (tree.name + "2")
    sibling.mkdir()
    with pytest.raises(OutsideRoot, match="outside"):
        relative_path(tree, (sibling / "a.py").as_uri())


# -- convert_positions -----------------------------------------------------------------

# Line 0: "a😀b"   😀 is 4 UTF-8 bytes, 2 UTF-16 units, 1 code point.
# Line 1: "漢字 x"  each CJK character is 3 bytes, 1 UTF-16 unit.
# Line 2: "e\u0301=1" (a combining acute accent: 2 code points, 3 bytes)
REQ_URI = f"{HOST}/req.py"
REQ = LineText("a😀b\r\n漢字 x\ne\u0301=1")
OTHER_URI = f"{HOST}/other.py"
OTHER = LineText("😀😀x\n")


def docs(uri: str) -> LineText | None:
    return {REQ_URI: REQ, OTHER_URI: OTHER}.get(uri)


def conv(obj: Any, src: Encoding = U16, dst: Encoding = U8, uri: str | None = REQ_URI) -> Any:
    before = copy.deepcopy(obj)
    out = convert_positions(obj, uri=uri, lines_for=docs, src=src, dst=dst)
    assert obj == before  # not mutated
    return out


def test_hover_range_uses_request_document() -> None:
    hover = {"contents": {"kind": "markdown", "value": "x"}, "range": rng(0, 3, 1, 2)}
    assert conv(hover)["range"] == rng(0, 5, 1, 6)
    assert conv(hover, U16, U32)["range"] == rng(0, 2, 1, 2)
    assert conv(conv(hover), U8, U16) == hover


def test_same_encoding_is_untouched() -> None:
    obj = {"range": rng(0, 1, 0, 99)}
    assert conv(obj, U16, U16) is obj


def test_location_list_uses_each_uri() -> None:
    locs = [
        {"uri": REQ_URI, "range": rng(0, 3, 0, 4)},
        {"uri": OTHER_URI, "range": rng(0, 4, 0, 5)},
        {"uri": f"{HOST}/unknown.py", "range": rng(0, 4, 0, 5)},
    ]
    assert conv(locs, uri=None) == [
        {"uri": REQ_URI, "range": rng(0, 5, 0, 6)},
        {"uri": OTHER_URI, "range": rng(0, 8, 0, 9)},
        {"uri": f"{HOST}/unknown.py", "range": rng(0, 4, 0, 5)},
    ]


def test_location_link_origin_belongs_to_request_document() -> None:
    link = {
        "originSelectionRange": rng(0, 1, 0, 3),
        "targetUri": OTHER_URI,
        "targetRange": rng(0, 0, 1, 0),
        "targetSelectionRange": rng(0, 4, 0, 5),
    }
    assert conv([link]) == [
        {
            "originSelectionRange": rng(0, 1, 0, 5),  # "😀" in req.py
            "targetUri": OTHER_URI,
            "targetRange": rng(0, 0, 1, 0),
            "targetSelectionRange": rng(0, 8, 0, 9),  # "x" in other.py
        }
    ]


def test_workspace_edit_changes_and_document_changes() -> None:
    edit: dict[str, Any] = {
        "changes": {
            REQ_URI: [{"range": rng(1, 1, 1, 2), "newText": "語"}],
            OTHER_URI: [{"range": rng(0, 2, 0, 4), "newText": ""}],
        },
        "documentChanges": [
            {"kind": "create", "uri": f"{HOST}/new.py", "options": {"overwrite": False}},
            {
                "textDocument": {"uri": OTHER_URI, "version": 3},
                "edits": [{"range": rng(0, 4, 0, 5), "newText": "y"}],
            },
            {"kind": "rename", "oldUri": OTHER_URI, "newUri": f"{HOST}/o2.py"},
            {
                "textDocument": {"uri": REQ_URI, "version": 7},
                "edits": [{"range": rng(0, 1, 0, 3), "newText": "🙂"}],
            },
        ],
    }
    out = conv(edit, uri=None)
    assert out["changes"][REQ_URI][0]["range"] == rng(1, 3, 1, 6)
    assert out["changes"][OTHER_URI][0]["range"] == rng(0, 4, 0, 8)
    assert out["documentChanges"][0] == edit["documentChanges"][0]
    assert out["documentChanges"][1]["edits"][0]["range"] == rng(0, 8, 0, 9)
    assert out["documentChanges"][2] == edit["documentChanges"][2]
    assert out["documentChanges"][3]["edits"][0]["range"] == rng(0, 1, 0, 5)


def test_publish_diagnostics_with_related_information() -> None:
    params = {
        "uri": REQ_URI,
        "version": 2,
        "diagnostics": [
            {
                "range": rng(2, 0, 2, 3),
                "severity": 1,
                "message": "bad",
                "relatedInformation": [
                    {"location": {"uri": OTHER_URI, "range": rng(0, 4, 0, 8)}, "message": "here"}
                ],
            }
        ],
    }
    out = conv(params, U8, U16, uri=None)
    diag = out["diagnostics"][0]
    assert diag["range"] == rng(2, 0, 2, 2)  # "e\u0301" is 3 bytes, 2 UTF-16 units
    assert diag["relatedInformation"][0]["location"]["range"] == rng(0, 2, 0, 4)


def test_request_params_use_text_document() -> None:
    params = {"textDocument": {"uri": OTHER_URI}, "position": pos(0, 4)}
    assert conv(params, uri=None)["position"] == pos(0, 8)
    folding = [{"startLine": 0, "startCharacter": 4, "endLine": 1, "kind": "region"}]
    assert conv(folding)[0] == {"startLine": 0, "startCharacter": 6, "endLine": 1, "kind": "region"}


def test_call_hierarchy_from_ranges() -> None:
    item = {"name": "f", "kind": 12, "uri": OTHER_URI}
    item |= {"range": rng(0, 0, 0, 5), "selectionRange": rng(0, 4, 0, 5)}
    incoming = [{"from": item, "fromRanges": [rng(0, 4, 0, 5)]}]  # in the caller, other.py
    out = conv(incoming)
    assert out[0]["fromRanges"] == [rng(0, 8, 0, 9)]
    assert out[0]["from"]["selectionRange"] == rng(0, 8, 0, 9)
    outgoing = [{"to": item, "fromRanges": [rng(0, 1, 0, 3)]}]  # in the request's item, req.py
    out = conv(outgoing)
    assert out[0]["fromRanges"] == [rng(0, 1, 0, 5)]
    assert out[0]["to"]["range"] == rng(0, 0, 0, 9)


def test_completion_items_text_edits() -> None:
    result = {
        "isIncomplete": False,
        "items": [
            {
                "label": "b",
                "textEdit": {"range": rng(0, 3, 0, 4), "newText": "bar"},
                "additionalTextEdits": [{"range": rng(1, 0, 1, 2), "newText": "import x\n"}],
            },
            {
                "label": "字",
                "textEdit": {
                    "newText": "字",
                    "insert": rng(1, 1, 1, 1),
                    "replace": rng(1, 1, 1, 2),
                },
            },
        ],
    }
    out = conv(result)
    assert out["items"][0]["textEdit"]["range"] == rng(0, 5, 0, 6)
    assert out["items"][0]["additionalTextEdits"][0]["range"] == rng(1, 0, 1, 6)
    assert out["items"][1]["textEdit"]["insert"] == rng(1, 3, 1, 3)
    assert out["items"][1]["textEdit"]["replace"] == rng(1, 3, 1, 6)
    assert conv(out, U8, U16) == result


@pytest.mark.parametrize(
    ("src", "dst", "before", "after"),
    [
        (U16, U8, pos(0, 2), pos(0, 1)),  # between the surrogates of 😀: snaps to its start
        (U8, U16, pos(0, 3), pos(0, 1)),  # inside 😀's UTF-8 bytes
        (U8, U32, pos(1, 4), pos(1, 1)),  # inside 字
        (U16, U8, pos(0, 99), pos(0, 6)),  # past the line's end (\r\n excluded)
        (U16, U8, pos(9, 0), pos(2, 5)),  # past the last line: the end of the text
        (U16, U8, pos(3, 0), pos(2, 5)),  # line == line_count
        (U16, U8, pos(-1, 5), pos(0, 0)),
        (U16, U8, pos(1, -3), pos(1, 0)),
    ],
)
def test_clamping_never_raises(src: Encoding, dst: Encoding, before: Any, after: Any) -> None:
    assert conv(before, src, dst) == after


def test_unknown_documents_and_non_positions_are_left_alone() -> None:
    obj = {"range": rng(0, 3, 0, 4), "data": {"line": 1, "character": 2, "extra": 3}}
    assert conv(obj, uri=None) == obj
    assert conv(obj, uri="untitled:1") == obj
    assert conv({"line": True, "character": 2}) == {"line": True, "character": 2}
    out = conv(obj)
    assert out["data"] == obj["data"]
    assert out["range"] == rng(0, 5, 0, 6)


_PIECES = ["a", "b", " ", "😀", "漢", "\u0301", "𝄞", "é", "\n", "\r\n", "\r"]
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


def _contents(text: str) -> list[str]:
    return [line.rstrip("\r\n") for line in split_lines(text)]


@st.composite
def _text_and_positions(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    text = draw(_TEXTS)
    contents = _contents(text)
    picks = []
    for _ in range(draw(st.integers(1, 6))):
        line = draw(st.integers(0, len(contents) - 1))
        picks.append((line, draw(st.integers(0, len(contents[line])))))
    return text, picks


@given(_text_and_positions(), st.sampled_from(ENCODINGS), st.sampled_from(ENCODINGS))
@settings(max_examples=300)
def test_position_round_trip(
    case: tuple[str, list[tuple[int, int]]], src: Encoding, dst: Encoding
) -> None:
    text, picks = case
    lines = LineText(text)
    contents = _contents(text)
    obj = {"ps": [pos(i, index_to_units(contents[i], k, src)) for i, k in picks]}
    there = convert_positions(obj, uri="u", lines_for=lambda _: lines, src=src, dst=dst)
    assert there["ps"] == [pos(i, index_to_units(contents[i], k, dst)) for i, k in picks]
    back = convert_positions(there, uri="u", lines_for=lambda _: lines, src=dst, dst=src)
    assert back == obj


# -- semantic tokens -------------------------------------------------------------------


@st.composite
def _text_and_tokens(draw: st.DrawFn) -> tuple[str, list[tuple[int, int, int, int, int]]]:
    text = draw(_TEXTS)
    contents = _contents(text)
    toks = []
    for _ in range(draw(st.integers(0, 8))):
        line = draw(st.integers(0, len(contents) - 1))
        a = draw(st.integers(0, len(contents[line])))
        b = draw(st.integers(a, len(contents[line])))
        toks.append((line, a, b, draw(st.integers(0, 22)), draw(st.integers(0, 1023))))
    toks.sort()
    return text, toks


def _encode(text: str, toks: list[tuple[int, int, int, int, int]], enc: Encoding) -> list[int]:
    contents = _contents(text)
    data, prev_line, prev_start = [], 0, 0
    for line, a, b, typ, mods in toks:
        start = index_to_units(contents[line], a, enc)
        end = index_to_units(contents[line], b, enc)
        data += [line - prev_line, start - prev_start if line == prev_line else start]
        data += [end - start, typ, mods]
        prev_line, prev_start = line, start
    return data


@given(_text_and_tokens(), st.sampled_from(ENCODINGS), st.sampled_from(ENCODINGS))
@settings(max_examples=300)
def test_semantic_tokens_round_trip(
    case: tuple[str, list[tuple[int, int, int, int, int]]], src: Encoding, dst: Encoding
) -> None:
    text, toks = case
    lines = LineText(text)
    data = _encode(text, toks, src)
    there = convert_semantic_tokens(data, lines, src, dst)
    assert there == _encode(text, toks, dst)
    assert convert_semantic_tokens(there, lines, dst, src) == data


def test_semantic_tokens_example() -> None:
    lines = LineText("a😀b = 漢\r\nx𝄞y\n")
    # "😀" (0, 1..3), "b" (0, 3..4), "漢" (0, 7..8), "y" (1, 3..4) in UTF-16 units.
    data = [0, 1, 2, 0, 0, 0, 2, 1, 1, 0, 0, 4, 1, 2, 1, 1, 3, 1, 3, 0]
    assert convert_semantic_tokens(data, lines, U16, U8) == [
        *[0, 1, 4, 0, 0],
        *[0, 4, 1, 1, 0],
        *[0, 4, 3, 2, 1],
        *[1, 5, 1, 3, 0],
    ]
    assert convert_semantic_tokens(data, lines, U16, U32)[:5] == [0, 1, 1, 0, 0]
    # Past the text, and past a line's end (a multi-line token), units are kept.
    assert convert_semantic_tokens([5, 1, 2, 0, 0], lines, U16, U8) == [5, 1, 2, 0, 0]
    assert convert_semantic_tokens([0, 3, 9, 0, 0], lines, U16, U8) == [0, 5, 11, 0, 0]
    with pytest.raises(ValueError, match="multiple of 5"):
        convert_semantic_tokens([0, 1, 2], lines, U16, U8)


def test_remap_token_legend_drops_unknown_types_and_keeps_positions() -> None:
    server = {
        "tokenTypes": ["class", "selfParameter", "function"],
        "tokenModifiers": ["x", "async"],
    }
    client = {"tokenTypes": ["function", "class"], "tokenModifiers": ["async", "static"]}
    data = [
        *[1, 2, 3, 0, 0b11],  # class at (1, 2), modifiers x|async
        *[0, 4, 4, 1, 0],  # selfParameter at (1, 6): dropped
        *[0, 5, 1, 2, 0b10],  # function at (1, 11)
        *[1, 0, 1, 1, 0],  # selfParameter at (2, 0): dropped
        *[0, 7, 2, 9, 0],  # type 9 is not in the server legend: dropped
        *[0, 2, 1, 2, 0b100],  # function at (2, 9), unknown modifier bit 2
    ]
    assert remap_token_legend(data, server, client) == [
        *[1, 2, 3, 1, 0b01],
        *[0, 9, 1, 0, 0b01],
        *[1, 9, 1, 0, 0],
    ]


def test_standard_legend() -> None:
    types, mods = STANDARD_LEGEND["tokenTypes"], STANDARD_LEGEND["tokenModifiers"]
    assert len(types) == 23 and types[0] == "namespace" and types[-1] == "decorator"
    assert len(set(types)) == 23 and "typeParameter" in types and "enumMember" in types
    assert list(mods) == [
        "declaration",
        "definition",
        "readonly",
        "static",
        "deprecated",
        "abstract",
        "async",
        "modification",
        "documentation",
        "defaultLibrary",
    ]


@st.composite
def _legends(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    std_types = list(STANDARD_LEGEND["tokenTypes"])
    std_mods = list(STANDARD_LEGEND["tokenModifiers"])
    types = draw(st.lists(st.sampled_from(std_types), min_size=1, unique=True))
    mods = draw(st.lists(st.sampled_from(std_mods), unique=True))
    extra_types = draw(st.lists(st.sampled_from(["label", "selfParameter", "x"]), unique=True))
    extra_mods = draw(st.lists(st.sampled_from(["local", "mutable"]), unique=True))
    wide_types = draw(st.permutations(std_types + extra_types))
    wide_mods = draw(st.permutations(std_mods + extra_mods))
    return (
        {"tokenTypes": types, "tokenModifiers": mods},
        {"tokenTypes": list(wide_types), "tokenModifiers": list(wide_mods)},
    )


@given(_legends(), st.data())
@settings(max_examples=200)
def test_legend_remap_to_superset_and_back(
    legends: tuple[dict[str, list[str]], dict[str, list[str]]], data: st.DataObject
) -> None:
    narrow, wide = legends
    toks = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.integers(0, 9),
                st.integers(0, 9),
                st.integers(0, len(narrow["tokenTypes"]) - 1),
                st.integers(0, (1 << len(narrow["tokenModifiers"])) - 1),
            ),
            max_size=10,
        )
    )
    flat = [n for tok in toks for n in tok]
    there = remap_token_legend(flat, narrow, wide)
    assert len(there) == len(flat)
    assert [wide["tokenTypes"][t] for t in there[3::5]] == [
        narrow["tokenTypes"][t] for t in flat[3::5]
    ]
    assert remap_token_legend(there, wide, narrow) == flat


_token = st.lists(st.integers(0, 3), min_size=5, max_size=5)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_token, max_size=8),
    st.lists(_token, max_size=4),
    st.lists(_token, max_size=4),
    st.lists(_token, max_size=8),
)
def test_token_deltas_turn_the_old_tokens_into_the_new(
    common_head: list[list[int]],
    old_mid: list[list[int]],
    new_mid: list[list[int]],
    common_tail: list[list[int]],
) -> None:
    def flat(tokens: list[list[int]]) -> list[int]:
        return [n for token in tokens for n in token]

    old = flat(common_head + old_mid + common_tail)
    new = flat(common_head + new_mid + common_tail)
    edits = token_delta(old, new)
    if old == new:
        assert edits == []
        return
    (edit,) = edits
    # Whole tokens only, and no more than what differs.
    assert edit["start"] % 5 == 0 and edit["deleteCount"] % 5 == 0
    assert edit["deleteCount"] <= len(flat(old_mid))
    patched = old[: edit["start"]] + edit["data"] + old[edit["start"] + edit["deleteCount"] :]
    assert patched == new
