"""Tests for collab_ls.workspace_tree on real directories and a real git repository."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab_ls.workspace_tree import (
    MANIFEST_FILE,
    SKIPPED_FILE,
    FileMeta,
    Mirror,
    TreeError,
    TreeLimits,
    check_rel_path,
    diff_trees,
    looks_binary,
    read_shared_file,
    scan_tree,
)

LIMITS = TreeLimits()
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config, and no repository above the test's directory."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


def make(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def project(tmp_path: Path, use_git: bool) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    if use_git:
        git(root, "init", "-q")
    return root


# -- scanning -----------------------------------------------------------------


def test_scan_git_repo_honours_every_ignore_source(tmp_path: Path) -> None:
    root = project(tmp_path, use_git=True)
    (tmp_path / "global-ignore").write_text("*.bak\n")
    (tmp_path / "gitconfig").write_text(f"[core]\n\texcludesFile = {tmp_path / 'global-ignore'}\n")
    make(
        root,
        {
            ".gitignore": "*.log\nbuild/\n",
            "a.py": "print(1)\n",
            "new.py": "untracked, not ignored\n",
            "x.log": "ignored\n",
            "build/out.c": "ignored dir\n",
            "sub/.gitignore": "secret.txt\n",
            "sub/secret.txt": "nested ignore\n",
            "sub/ok.txt": "kept\n",
            "excluded.txt": "info/exclude\n",
            "old.bak": "global excludes\n",
        },
    )
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("excluded.txt\n")
    git(root, "add", "a.py", ".gitignore")
    git(root, "commit", "-q", "-m", "init")

    tree = scan_tree(root, LIMITS)

    assert set(tree.files) == {".gitignore", "a.py", "new.py", "sub/.gitignore", "sub/ok.txt"}
    assert not tree.truncated
    assert tree.files["a.py"].size == len("print(1)\n")


def test_scan_git_repo_from_a_subdirectory(tmp_path: Path) -> None:
    root = project(tmp_path, use_git=True)
    make(root, {".gitignore": "*.log\n", "top.txt": "x", "sub/a.txt": "a", "sub/b.log": "b"})
    assert set(scan_tree(root / "sub", LIMITS).files) == {"a.txt"}


def test_scan_without_git_uses_nested_gitignores(tmp_path: Path) -> None:
    root = project(tmp_path, use_git=False)
    make(
        root,
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/top-only.txt\n",
            "a.py": "",
            "x.log": "",
            "keep.log": "",
            "top-only.txt": "",
            "deep/top-only.txt": "anchored pattern: only the root's is ignored",
            "build/out.c": "",
            "sub/build/out.c": "",
            "sub/.gitignore": "secret.txt\n!special.log\n",
            "sub/secret.txt": "",
            "sub/special.log": "re-included by the nested file",
            "sub/other.log": "",
            "secret.txt": "the nested rule applies only to its subtree",
            ".git/config": "never listed",
            os.fsdecode(b"not-utf8-\xff.txt"): "a name JSON cannot carry",
            "sub/.git/HEAD": "never listed",
        },
    )
    tree = scan_tree(root, LIMITS)
    assert set(tree.files) == {
        ".gitignore",
        "a.py",
        "keep.log",
        "deep/top-only.txt",
        "sub/.gitignore",
        "sub/special.log",
        "secret.txt",
    }


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "walk"])
def test_scan_symlinks(tmp_path: Path, use_git: bool) -> None:
    root = project(tmp_path, use_git)
    outside = tmp_path / "outside"
    make(outside, {"secret.txt": "not shared"})
    make(root, {"real/a.txt": "a", "target.txt": "t"})
    (root / "to-outside.txt").symlink_to(outside / "secret.txt")
    (root / "outside-dir").symlink_to(outside)
    (root / "linked-dir").symlink_to(root / "real")
    (root / "to-target.txt").symlink_to("target.txt")

    files = scan_tree(root, LIMITS).files

    assert set(files) == {"real/a.txt", "target.txt", "to-target.txt"}
    assert files["to-target.txt"].size == 1


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "walk"])
def test_scan_flags_binary_and_too_big(tmp_path: Path, use_git: bool) -> None:
    root = project(tmp_path, use_git)
    make(
        root,
        {
            "nul.dat": b"abc\0def",
            "latin1.txt": "café".encode("latin-1"),
            # The 8 KiB cut falls inside "é": still text.
            "straddle.txt": ("x" * 8191 + "é" * 10).encode(),
            "emoji.txt": "🎉 ok\n",
            "big.txt": "y" * 1001,
            "big.bin": b"\0" * 1001,
        },
    )
    files = scan_tree(root, TreeLimits(max_file_bytes=1000)).files
    assert files["nul.dat"].binary and not files["nul.dat"].too_big
    assert files["latin1.txt"].binary
    assert not files["straddle.txt"].binary and files["straddle.txt"].too_big
    assert not files["emoji.txt"].binary and files["emoji.txt"].servable
    assert files["big.txt"].too_big and not files["big.txt"].binary
    assert files["big.bin"].too_big and files["big.bin"].binary


def test_looks_binary_cut_multibyte() -> None:
    head = ("x" * 8191 + "é").encode()[:8192]
    assert not looks_binary(head, complete=False)
    assert looks_binary(head, complete=True)  # the whole file really ends mid-character
    assert looks_binary(b"ok\xff", complete=False)


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "walk"])
def test_scan_truncates_at_max_files(tmp_path: Path, use_git: bool) -> None:
    root = project(tmp_path, use_git)
    make(root, {f"f{i}.txt": "x" * 10 for i in range(5)})
    tree = scan_tree(root, TreeLimits(max_files=3))
    assert tree.truncated and len(tree.files) == 3
    tree = scan_tree(root, TreeLimits(max_files=5))
    assert not tree.truncated and len(tree.files) == 5
    tree = scan_tree(root, TreeLimits(max_total_bytes=25))
    assert tree.truncated and len(tree.files) == 2


def test_scan_reuses_binary_flag_of_unchanged_files(tmp_path: Path) -> None:
    root = project(tmp_path, use_git=False)
    make(root, {"a.txt": "text"})
    meta = scan_tree(root, LIMITS).files["a.txt"]
    previous = {"a.txt": FileMeta(meta.size, True, False, meta.mtime_ns)}
    assert scan_tree(root, LIMITS, previous=previous).files["a.txt"].binary
    (root / "a.txt").write_text("changed")
    assert not scan_tree(root, LIMITS, previous=previous).files["a.txt"].binary


# -- metadata and diffs -------------------------------------------------------


def test_file_meta_json_round_trip() -> None:
    meta = FileMeta(size=12, binary=False, too_big=True, mtime_ns=1712345678901234567)
    assert FileMeta.from_json(meta.to_json()) == meta
    # Yjs hands small numbers back as floats.
    assert FileMeta.from_json({"s": 12.0, "b": False, "t": True, "m": 5.0}).size == 12


@pytest.mark.parametrize(
    ("junk", "message"),
    [
        ("x", "must be a map"),
        ({"b": False, "t": False, "m": 0}, "'s' (size) must be an integer"),
        ({"s": -1, "b": False, "t": False, "m": 0}, "must be >= 0"),
        ({"s": True, "b": False, "t": False, "m": 0}, "must be an integer"),
        ({"s": 1.5, "b": False, "t": False, "m": 0}, "must be an integer"),
        ({"s": 1, "b": "no", "t": False, "m": 0}, "'b' (binary) must be true or false"),
        ({"s": 1, "b": False, "t": False, "m": "now"}, "'m' (mtime_ns)"),
    ],
)
def test_file_meta_rejects_junk(junk: object, message: str) -> None:
    with pytest.raises(TreeError, match=re.escape(message)):
        FileMeta.from_json(junk)


def meta(size: int = 1, mtime: int = 0, *, binary: bool = False, too_big: bool = False) -> FileMeta:
    return FileMeta(size=size, binary=binary, too_big=too_big, mtime_ns=mtime)


def test_diff_trees() -> None:
    old = {"same": meta(1), "gone": meta(1), "grew": meta(1), "touched": meta(1, 1)}
    new = {"same": meta(1), "grew": meta(2), "touched": meta(1, 2), "new": meta(1)}
    diff = diff_trees(old, new)
    assert diff.added == ["new"]
    assert diff.removed == ["gone"]
    assert diff.changed == ["grew", "touched"]
    assert diff_trees(new, new) == diff_trees({}, {})


# -- serving files ------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "../x",
        "/etc/passwd",
        "",
        "a//b",
        "./a",
        "a\\..\\b",
        "a\0b",
        "a\nb",
        "C:/x",
        ".git/config",
        "\udcff",
    ],
)
def test_check_rel_path_refuses(rel: str) -> None:
    with pytest.raises(TreeError):
        check_rel_path(rel)


def test_read_shared_file(tmp_path: Path) -> None:
    root = project(tmp_path, use_git=True)
    make(
        tmp_path,
        {
            "x": "outside",
            "proj/emoji.txt": "héllo 🎉\n",
            "proj/bin.dat": b"\0\1",
            "proj/big": "z" * 21,
        },
    )
    (root / "escape").symlink_to(tmp_path / "x")
    (root / "git-link").symlink_to(".git/config")
    (root / "inside-link").symlink_to("emoji.txt")
    os.mkfifo(root / "fifo")
    limits = TreeLimits(max_file_bytes=20)

    assert read_shared_file(root, "emoji.txt", limits) == "héllo 🎉\n"
    assert read_shared_file(root, "inside-link", limits) == "héllo 🎉\n"
    refusals = {
        "../x": "'..'",
        "/etc/passwd": "absolute",
        "escape": "outside the workspace",
        ".git/config": ".git",
        "git-link": ".git",
        "bin.dat": "binary",
        "big": "over the limit",
        "missing.txt": "no such file",
        "fifo": "not a regular file",
    }
    for rel, reason in refusals.items():
        with pytest.raises(TreeError, match=reason):
            read_shared_file(root, rel, limits)


# -- the guest's mirror -------------------------------------------------------


def files_in(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` but the mirror's own, with its text."""
    return {
        p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8")
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(".collab-ls-")
    }


def test_mirror_placeholders_fetch_remove_rename(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "ws")
    ws = tmp_path / "ws"
    update = mirror.apply({"a.py": meta(3), "pkg/deep/b.py": meta(1), "c.py": meta(2)})
    assert update.created == ["a.py", "c.py", "pkg/deep/b.py"]
    assert files_in(ws) == {"a.py": "", "c.py": "", "pkg/deep/b.py": ""}
    assert mirror.needs_fetch() == ["pkg/deep/b.py", "c.py", "a.py"]  # smallest first
    assert mirror.is_placeholder("a.py")

    mirror.write("a.py", "é🎉\n")
    assert (ws / "a.py").read_text(encoding="utf-8") == "é🎉\n"
    assert not mirror.is_placeholder("a.py")
    assert mirror.needs_fetch() == ["pkg/deep/b.py", "c.py"]

    # c.py removed; pkg/deep/b.py renamed to lib/b.py; a.py changed on the host.
    update = mirror.apply({"a.py": meta(4), "lib/b.py": meta(1)})
    assert update.removed == ["c.py", "pkg/deep/b.py"]
    assert update.created == ["lib/b.py"]
    assert update.changed == ["a.py"]
    assert files_in(ws) == {"a.py": "é🎉\n", "lib/b.py": ""}
    assert not (ws / "pkg").exists()  # emptied directories the mirror made are removed
    assert mirror.is_placeholder("a.py")
    assert mirror.needs_fetch() == ["lib/b.py", "a.py"]


def test_mirror_write_with_stale_expected_still_needs_fetch(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path)
    mirror.apply({"a": meta(1)})
    asked = mirror.meta("a")
    mirror.apply({"a": meta(2)})
    mirror.write("a", "x", expected=asked)
    assert mirror.needs_fetch() == ["a"]
    mirror.write("a", "xy", expected=mirror.meta("a"))
    assert mirror.needs_fetch() == []


def test_mirror_leaves_foreign_files_alone(tmp_path: Path) -> None:
    make(tmp_path, {"mine.txt": "local", "notes.txt": "local"})
    mirror = Mirror(tmp_path)
    update = mirror.apply({"mine.txt": meta(9), "new.txt": meta(1)})
    assert update.foreign == ["mine.txt"] and update.created == ["new.txt"]
    mirror.apply({})
    assert files_in(tmp_path) == {"mine.txt": "local", "notes.txt": "local"}


def test_mirror_skipped_list(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path)
    update = mirror.apply(
        {"img.png": meta(5, binary=True), "huge.txt": meta(9, too_big=True), "a": meta()}
    )
    assert (
        update.skipped == mirror.skipped() == {"huge.txt": "too big (9 bytes)", "img.png": "binary"}
    )
    assert files_in(tmp_path) == {"a": ""}
    lines = (tmp_path / SKIPPED_FILE).read_text().splitlines()
    assert lines[1:] == ["huge.txt\ttoo big (9 bytes)", "img.png\tbinary"]
    mirror.apply({"a": meta()})
    assert mirror.skipped() == {} and not (tmp_path / SKIPPED_FILE).exists()


UNSAFE = ["../evil", "/abs", "a/../../b", "a\\..\\b", "..\\evil", "a\0b", "a//b", ".git/hooks/x"]


def test_mirror_refuses_untrusted_paths(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    before = sorted(p.name for p in tmp_path.iterdir())
    mirror = Mirror(ws)
    update = mirror.apply({rel: meta() for rel in [*UNSAFE, "ok.txt"]})
    assert set(update.rejected) == set(UNSAFE)
    assert update.created == ["ok.txt"]
    for rel in UNSAFE:
        with pytest.raises(TreeError):
            mirror.write(rel, "pwned")
        with pytest.raises(TreeError):
            mirror.path(rel)
    assert sorted(p.name for p in tmp_path.iterdir()) == [*before, "ws"]
    assert files_in(ws) == {"ok.txt": ""}
    assert not list(Path("/").glob("abs"))


def test_mirror_refuses_paths_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "link").symlink_to(outside)
    (ws / "file-link").symlink_to(outside / "f")
    mirror = Mirror(ws)
    update = mirror.apply({"link/x": meta(), "file-link": meta()})
    assert set(update.rejected) == {"link/x", "file-link"}
    for rel in ["link/x", "file-link", SKIPPED_FILE, MANIFEST_FILE]:
        with pytest.raises(TreeError):
            mirror.write(rel, "pwned")
    assert list(outside.iterdir()) == []


def test_mirror_taken_over_by_a_later_session(tmp_path: Path) -> None:
    first = Mirror(tmp_path)
    first.apply({"a": meta(2), "b": meta(2), "d/c": meta(1)})
    first.write("a", "hi")
    second = Mirror(tmp_path)
    assert second.needs_fetch() == ["d/c", "b"]
    update = second.apply({"a": meta(2)})
    assert update.removed == ["b", "d/c"] and update.created == []
    assert files_in(tmp_path) == {"a": "hi"} and not (tmp_path / "d").exists()
    (tmp_path / MANIFEST_FILE).write_text('{"files": {"../x": null, "a": "junk"}, "dirs": [1]}')
    assert Mirror(tmp_path).needs_fetch() == []


# -- property: a mirror always matches the last tree --------------------------

SEGMENT = st.sampled_from(["a", "b", "c.txt", "d é"])
PATH = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)
META = st.builds(
    FileMeta,
    size=st.integers(0, 30),
    binary=st.sampled_from([False, False, False, True]),
    too_big=st.just(False),
    mtime_ns=st.integers(0, 2),
)


def without_conflicts(tree: dict[str, FileMeta]) -> dict[str, FileMeta]:
    """A file cannot also be a directory of another file."""
    return {p: m for p, m in tree.items() if not any(q.startswith(p + "/") for q in tree)}


TREE = st.dictionaries(PATH, META, max_size=8).map(without_conflicts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TREE, min_size=1, max_size=6), st.data())
def test_mirror_matches_the_last_tree(
    trees: list[dict[str, FileMeta]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        mirror = Mirror(ws)
        content: dict[str, str] = {}  # what each mirrored file should hold
        fresh: set[str] = set()  # fetched since the host last changed it
        previous: dict[str, FileMeta] = {}
        for n, tree in enumerate(trees):
            mirror.apply(tree)
            text = {p: m for p, m in tree.items() if m.servable}
            for rel in list(content):
                if rel not in text:
                    del content[rel]
                    fresh.discard(rel)
                elif previous[rel] != text[rel]:
                    fresh.discard(rel)
            for rel in text.keys() - content.keys():
                content[rel] = ""
            previous = text

            assert files_in(ws) == content
            dirs = {p.relative_to(ws).as_posix() for p in ws.rglob("*") if p.is_dir()}
            parents = {"/".join(r.split("/")[:i]) for r in text for i in range(1, r.count("/") + 1)}
            assert dirs == parents
            assert sorted(mirror.needs_fetch()) == sorted(text.keys() - fresh)
            assert set(mirror.skipped()) == {p for p, m in tree.items() if not m.servable}

            for rel in data.draw(
                st.sets(st.sampled_from(sorted(text))) if text else st.just(set())
            ):
                mirror.write(rel, f"{rel} #{n} 🎉\n")
                content[rel] = f"{rel} #{n} 🎉\n"
                fresh.add(rel)
            assert files_in(ws) == content
