"""Model-based property test of the editor <-> CRDT reconciliation.

Three (or four) simulated editors with real-client behaviour (see
``editor_model``) type and delete at random, including non-BMP text and
``\\r\\n``, while Hypothesis picks the order in which every message moves:
editor -> server, server -> editor, and pycrdt updates between peers
(delayed and reordered). At the end everything is delivered and the
invariants are checked:

Updates between peers keep each sender's order (one websocket through one
relay does), interleaving different senders' updates at random. (pycrdt 0.14
was seen to lose an update when one sender's updates arrived out of order,
which a websocket never does.)

* every editor buffer and every CRDT replica hold the same text;
* every character a user typed is there exactly once unless a user deleted
  it (typed characters are unique, so duplication or loss is visible);
* line breaks are counted: nothing duplicated, nothing lost.
"""

from __future__ import annotations

import random
from collections import Counter, deque

import pycrdt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab_ls.units import Encoding
from tests.editor_model import Editor, Kind, Peer

_RANGES = [(0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0100, 0x017F), (0x0400, 0x04FF)]


class Fresh:
    """Hands out characters never used before, from CJK, emoji, Latin and Cyrillic."""

    def __init__(self) -> None:
        self.n = 0

    def char(self, rnd: random.Random) -> str:
        lo, hi = _RANGES[rnd.randrange(len(_RANGES))]
        self.n += 1
        return chr(lo + (self.n * 7919) % (hi - lo))


class World:
    def __init__(self, kinds: list[Kind], honest: bool, initial: str, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.fresh = Fresh()
        seed_doc = pycrdt.Doc()
        seed_doc.get("t", type=pycrdt.Text).insert(0, initial)
        state = seed_doc.get_update()
        self.seed_state = state
        encodings = {
            "nvim": [Encoding.UTF8, Encoding.UTF32, Encoding.UTF16],
            "nvim0": [Encoding.UTF8, Encoding.UTF16],
            "vscode": [Encoding.UTF16],
            "full": [Encoding.UTF16, Encoding.UTF8],
        }
        self.peers: list[Peer] = []
        for i, kind in enumerate(kinds):
            doc = pycrdt.Doc()
            doc.apply_update(state)
            enc = self.rnd.choice(encodings[kind])
            self.peers.append(Peer(Editor(f"p{i}", kind, enc, initial), doc, honest))
        # One FIFO per (sender, receiver): a websocket through one relay keeps each
        # sender's order; only different senders' updates interleave.
        self.network: dict[tuple[int, int], deque[bytes]] = {}
        self.initial = initial
        self.typed: list[str] = []

    def route(self) -> None:
        for i, p in enumerate(self.peers):
            for update in p.outbox:
                for j in range(len(self.peers)):
                    if j != i:
                        self.network.setdefault((i, j), deque()).append(update)
            p.outbox.clear()

    def keystroke(self, p: Peer) -> None:
        e, rnd = p.editor, self.rnd
        n = len(e.text)
        start = rnd.randint(0, n)
        roll = rnd.random()
        if roll < 0.55 or n == 0:
            k = rnd.choice([1, 1, 1, 2, 3])
            new = "".join(self.fresh.char(rnd) for _ in range(k))
            if rnd.random() < 0.15:
                new = rnd.choice(["\n", "\r\n"]) + new
            end = start
        elif roll < 0.85:
            end = min(n, start + rnd.choice([1, 1, 2, 5]))
            new = ""
        else:
            end = min(n, start + rnd.randint(1, 4))
            new = self.fresh.char(rnd)
        # Never cut a \r\n in two: editors cannot address the middle of a line break.
        if 0 < start < n and e.text[start - 1] == "\r" and e.text[start] == "\n":
            start -= 1
        if 0 < end < n and e.text[end - 1] == "\r" and e.text[end] == "\n":
            end += 1
        end = max(end, start)
        self.typed.append(new)
        e.type(start, end, new, tick=rnd.choice([1, 1, 2, 3]))

    def actions(self) -> list[tuple[str, int]]:
        acts: list[tuple[str, int]] = []
        for i, p in enumerate(self.peers):
            acts.append(("type", i))
            if p.editor.unsent:
                acts.append(("flush", i))
            if p.editor.from_server:
                acts.append(("edit", i))
            if p.editor.to_server:
                acts.append(("server", i))
            if p.sync.awaiting_echo and p.quiet():
                acts.append(("timeout", i))
        if any(self.network.values()):
            acts.append(("net", 0))
        return acts

    def do(self, act: tuple[str, int]) -> None:
        kind, i = act
        if kind == "net":
            channels = sorted(k for k, q in self.network.items() if q)
            src, dst = channels[self.rnd.randrange(len(channels))]
            self.peers[dst].receive_update(self.network[(src, dst)].popleft())
        else:
            p = self.peers[i]
            if kind == "type":
                self.keystroke(p)
            elif kind == "flush":
                p.editor.flush()
            elif kind == "edit":
                p.editor.receive_edit(p.honest)
            elif kind == "server":
                p.server_step()
            elif kind == "timeout":
                p.timeout()
        self.route()

    def settle(self) -> None:
        for _ in range(10_000):
            acts = [a for a in self.actions() if a[0] != "type"]
            if not acts:
                return
            # Prefer moving messages; time out only once everything else is quiet.
            moving = [a for a in acts if a[0] != "timeout"]
            self.do(self.rnd.choice(moving or acts))
        raise AssertionError("did not settle")

    def check(self) -> None:
        texts = [p.editor.text for p in self.peers]
        crdts = [str(p.text) for p in self.peers]
        assert all(t == texts[0] for t in texts), texts
        assert all(c == texts[0] for c in crdts), (texts[0], crdts)
        final = texts[0]
        deleted = Counter("".join(d for p in self.peers for d in p.editor.typed_deleted))
        inserted = Counter("".join(self.typed))
        initial = Counter(self.initial)
        counts = Counter(final)
        for ch in set(inserted) | set(initial) | set(counts):
            if ch in "\r\n":
                # Two users deleting the same line break concurrently delete it once.
                most = initial[ch] + inserted[ch]
                assert most - deleted[ch] <= counts[ch] <= most, (repr(ch), counts[ch], most)
            else:
                # Every other character is unique: there once unless someone deleted it.
                expected = 0 if deleted[ch] else 1
                assert counts[ch] == expected, (repr(ch), counts[ch], expected, final)
        for p in self.peers:
            assert p.sync.idle()
            assert not p.errors


KINDS: list[Kind] = ["nvim", "nvim0", "vscode", "full"]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Kind], bool, str, int, int]:
    n = draw(st.integers(3, 4))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n)]
    honest = draw(st.booleans())
    initial = draw(st.sampled_from(["", "ab\ncd\n", "x\r\ny\r\n", "é😀中\n"]))
    steps = draw(st.integers(5, 80))
    seed = draw(st.integers(0, 2**32))
    return kinds, honest, initial, steps, seed


@settings(
    max_examples=4000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
@given(scenario())
def test_editors_converge_and_keep_every_keystroke(
    case: tuple[list[Kind], bool, str, int, int],
) -> None:
    kinds, honest, initial, steps, seed = case
    world = World(kinds, honest, initial, seed)
    for _ in range(steps):
        acts = world.actions()
        act = world.rnd.choice(acts)
        # Typing is frequent but should not drown the message traffic.
        if act[0] == "type" and world.rnd.random() < 0.5:
            act = world.rnd.choice(acts)
        world.do(act)
    world.settle()
    world.check()
