"""A reader of Yjs updates (format v1): the items of a document and its delete set.

pycrdt does not expose the items of a shared type, but :meth:`pycrdt.Doc.get_update`
encodes them (the encoding of Yjs ``encodeStateAsUpdate`` and yrs
``encode_state_as_update_v1``). This module decodes it far enough to tell
which item holds which clocks, whether it is deleted, its parent, and the
string of a string item; other content is skipped, not kept.

Layout (lib0 encoding; ``varUint`` little-endian base-128, ``varString`` a
varUint byte count then UTF-8)::

    update     = varUint clients,
                 clients × (varUint structs, varUint client, varUint first clock,
                            structs × struct),
                 delete set
    struct     = uint8 info, then by ``info & 0x1f``:
                 0 GC, 10 Skip: varUint length
                 else an item: [origin id if info & 0x80] [right origin id if info & 0x40]
                 [if neither origin: varUint 1 + varString root type name, or 0 + parent id;
                 then varString parent key if info & 0x20] content (by ``info & 0x1f``)
    id         = varUint client, varUint clock
    delete set = varUint clients, clients × (varUint client, varUint ranges,
                 ranges × (varUint clock, varUint length))

An item written with an origin does not repeat its parent: it has the parent
of its origin (or right origin) item. String clocks count UTF-16 code units.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

ID = tuple[int, int]
"""A Yjs id ``(client, clock)``."""

Parent = str | ID
"""A shared type: the name of a root type, or the id of the item holding the type."""

# Struct kinds: content refs 1-9, and the two structs without content.
GC = 0
DELETED = 1
JSON = 2
BINARY = 3
STRING = 4
EMBED = 5
FORMAT = 6
TYPE = 7
ANY = 8
DOC = 9
SKIP = 10

_XML_ELEMENT = 3  # type refs followed by a node name
_XML_HOOK = 5


class UpdateDecodeError(ValueError):
    """The bytes are not a Yjs v1 update this reader understands."""


@dataclass(slots=True)
class Struct:
    """One struct of an update: ``length`` consecutive clocks of one client.

    Attributes:
        client: The client that created it.
        clock: Its first clock.
        length: Its number of clocks (UTF-16 code units for a string).
        ref: The kind: a content ref (``STRING``, ``TYPE``...), or ``GC`` / ``SKIP``.
        origin: The id of the item left of it when it was inserted.
        right_origin: The id of the item right of it when it was inserted.
        parent: The parent as written; None when implied by an origin.
        parent_sub: The map key as written; None when implied or not a map entry.
        keyed: Whether it is a map entry (a key is written or implied).
        text: The string of a ``STRING`` item.
        size: The size of ``text`` in UTF-8 bytes.
        type_ref: The kind of shared type of a ``TYPE`` item (0 Array, 1 Map, 2 Text...).
    """

    client: int
    clock: int
    length: int
    ref: int
    origin: ID | None = None
    right_origin: ID | None = None
    parent: Parent | None = None
    parent_sub: str | None = None
    keyed: bool = False
    text: str | None = None
    size: int = 0
    type_ref: int | None = None

    @property
    def is_item(self) -> bool:
        """Whether it is an item (not a garbage-collected or skipped range)."""
        return self.ref not in (GC, SKIP)


@dataclass(frozen=True, slots=True)
class TextRun:
    """A live run of a string item: ``text`` holds the clocks from ``clock`` on."""

    client: int
    clock: int
    text: str


class DeleteSet:
    """The deleted clock ranges of each client."""

    def __init__(self, ranges: Mapping[int, Iterable[tuple[int, int]]] | None = None) -> None:
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        for client, spans in (ranges or {}).items():
            merged: list[tuple[int, int]] = []
            for clock, length in sorted(spans):
                if merged and clock <= merged[-1][0] + merged[-1][1]:
                    start, n = merged[-1]
                    merged[-1] = (start, max(n, clock + length - start))
                elif length > 0:
                    merged.append((clock, length))
            if merged:
                self.ranges[client] = merged
        self._starts = {c: [s for s, _ in spans] for c, spans in self.ranges.items()}

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, tuple) or len(id_) != 2:
            return False
        client, clock = id_
        starts = self._starts.get(client)
        if not starts:
            return False
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return False
        start, length = self.ranges[client][i]
        return bool(clock < start + length)

    def cuts(self, client: int, clock: int, length: int) -> list[tuple[int, int]]:
        """The deleted ``(start, end)`` clock spans inside ``[clock, clock + length)``."""
        spans = self.ranges.get(client)
        if not spans:
            return []
        end = clock + length
        out: list[tuple[int, int]] = []
        for start, n in spans[max(0, bisect_right(self._starts[client], clock) - 1) :]:
            if start >= end:
                break
            if start + n > clock:
                out.append((max(start, clock), min(start + n, end)))
        return out


@dataclass
class Update:
    """A decoded update: the structs of each client (in clock order) and the delete set."""

    structs: dict[int, list[Struct]]
    deleted: DeleteSet = field(default_factory=DeleteSet)
    _starts: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _parents: dict[ID, Parent | None] = field(default_factory=dict, repr=False)

    def find(self, client: int, clock: int) -> Struct | None:
        """The struct holding clock ``clock`` of ``client``, if the update has it."""
        structs = self.structs.get(client)
        if not structs:
            return None
        starts = self._starts.get(client)
        if starts is None:
            starts = self._starts[client] = [s.clock for s in structs]
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return None
        found = structs[i]
        return found if clock < found.clock + found.length else None

    def is_live(self, item: Struct) -> bool:
        """Whether an item is wholly undeleted."""
        return (
            item.is_item
            and item.ref != DELETED
            and not self.deleted.cuts(item.client, item.clock, item.length)
        )

    def parent(self, item: Struct) -> Parent | None:
        """The parent of an item, following origins as Yjs does; None if unknown.

        Unknown: the item is not an item (GC'ed), or neither of its origins is
        an item of this update.
        """
        chain: list[ID] = []
        current: Struct | None = item
        result: Parent | None = None
        while current is not None and current.is_item:
            key = (current.client, current.clock)
            if key in self._parents:
                result = self._parents[key]
                break
            chain.append(key)
            if current.parent is not None:
                result = current.parent
                break
            origins = (current.origin, current.right_origin)
            near = (self.find(*ref) for ref in origins if ref is not None)
            current = next((s for s in near if s is not None and s.is_item), None)
        for key in chain:
            self._parents[key] = result
        return result

    def live_runs(self, item: Struct) -> list[TextRun]:
        """The undeleted parts of a string item (none for other structs)."""
        if item.ref != STRING or item.text is None:
            return []
        cuts = self.deleted.cuts(item.client, item.clock, item.length)
        if not cuts:
            return [TextRun(item.client, item.clock, item.text)]
        units = item.text.encode("utf-16-le", "surrogatepass")
        runs: list[TextRun] = []
        at = item.clock
        for lo, hi in [*cuts, (item.clock + item.length,) * 2]:
            if lo > at:
                part = units[2 * (at - item.clock) : 2 * (lo - item.clock)]
                runs.append(TextRun(item.client, at, part.decode("utf-16-le", "surrogatepass")))
            at = max(at, hi)
        return runs

    def text_runs(self, parent: Parent) -> list[TextRun]:
        """The live string runs of the sequence of type ``parent``, by client and clock.

        Not in document order (that needs the Yjs integration algorithm). Map
        entries (keyed items, e.g. ``Y.XmlText`` attributes) are left out.
        """
        return [
            run
            for structs in self.structs.values()
            for s in structs
            if s.ref == STRING and not s.keyed and self.parent(s) == parent
            for run in self.live_runs(s)
        ]


# The reader: functions of (bytes, position) returning the value read and the
# position after it; a read past the end raises IndexError, turned into
# UpdateDecodeError by the public functions. Decoding is on the path of every
# cursor shown, hence the plain loops.


def _var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    num = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        num |= (b & 0x7F) << shift
        if b < 0x80:
            return num, pos
        shift += 7


def _var_int(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    num, negative, shift = b & 0x3F, b & 0x40, 6
    while b & 0x80:
        b = buf[pos]
        pos += 1
        num |= (b & 0x7F) << shift
        shift += 7
    return (-num if negative else num), pos


def _skip_bytes(buf: bytes, pos: int) -> int:
    """Skip a varUint length and that many bytes."""
    n, pos = _var_uint(buf, pos)
    if pos + n > len(buf):
        raise IndexError(pos + n)
    return pos + n


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    n, pos = _var_uint(buf, pos)
    if pos + n > len(buf):
        raise IndexError(pos + n)
    return buf[pos : pos + n].decode("utf-8", "surrogatepass"), pos + n


_CLIENTS: dict[bytes, int] = {}
"""Client ids (random 53-bit numbers, 8-byte varUints) by their encoding: they repeat."""


def _id(buf: bytes, pos: int) -> tuple[ID, int]:
    client = _CLIENTS.get(buf[pos : pos + 8])
    if client is None:
        client, end = _var_uint(buf, pos)
        if end - pos == 8:
            if len(_CLIENTS) >= 4096:
                _CLIENTS.clear()
            _CLIENTS[buf[pos:end]] = client
        pos = end
    else:
        pos += 8
    clock = buf[pos]
    if clock < 0x80:
        return (client, clock), pos + 1
    clock, pos = _var_uint(buf, pos)
    return (client, clock), pos


def _skip_any(buf: bytes, pos: int) -> int:
    """Skip a lib0 ``any`` value."""
    tag = buf[pos]
    pos += 1
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if tag == 125:  # integer
        return _var_int(buf, pos)[1]
    if tag == 124:  # float32
        return pos + 4
    if tag in (123, 122):  # float64, bigint64
        return pos + 8
    if tag in (119, 116):  # string, bytes
        return _skip_bytes(buf, pos)
    if tag == 118:  # object: key, value pairs
        n, pos = _var_uint(buf, pos)
        for _ in range(n):
            pos = _skip_any(buf, _skip_bytes(buf, pos))
        return pos
    if tag == 117:  # array
        n, pos = _var_uint(buf, pos)
        for _ in range(n):
            pos = _skip_any(buf, pos)
        return pos
    raise UpdateDecodeError(f"unknown value tag {tag} in update")


def _skip_content(buf: bytes, pos: int, ref: int) -> tuple[int, int | None, int]:
    """Skip content other than a string: its length, its type ref (of a type), the position."""
    if ref == DELETED:
        length, pos = _var_uint(buf, pos)
        return length, None, pos
    if ref in (JSON, ANY):
        length, pos = _var_uint(buf, pos)
        for _ in range(length):
            pos = _skip_bytes(buf, pos) if ref == JSON else _skip_any(buf, pos)
        return length, None, pos
    if ref in (BINARY, EMBED):
        return 1, None, _skip_bytes(buf, pos)
    if ref == FORMAT:  # key, JSON value
        return 1, None, _skip_bytes(buf, _skip_bytes(buf, pos))
    if ref == TYPE:
        type_ref, pos = _var_uint(buf, pos)
        if type_ref in (_XML_ELEMENT, _XML_HOOK):  # node name
            pos = _skip_bytes(buf, pos)
        return 1, type_ref, pos
    if ref == DOC:  # guid, options
        return 1, None, _skip_any(buf, _skip_bytes(buf, pos))
    raise UpdateDecodeError(f"unknown content kind {ref} in update")


def _read_structs(buf: bytes) -> Generator[Struct, None, int]:
    """Yield the structs of an update; return the position of its delete set."""
    clients, pos = _var_uint(buf, 0)
    for _ in range(clients):
        count, pos = _var_uint(buf, pos)
        client, pos = _var_uint(buf, pos)
        clock, pos = _var_uint(buf, pos)
        for _ in range(count):
            info = buf[pos]
            pos += 1
            ref = info & 0x1F
            if ref == GC or ref == SKIP:
                length, pos = _var_uint(buf, pos)
                yield Struct(client, clock, length, ref)
                clock += length
                continue
            origin = right_origin = None
            parent: Parent | None = None
            parent_sub = None
            if info & 0x80:
                origin, pos = _id(buf, pos)
            if info & 0x40:
                right_origin, pos = _id(buf, pos)
            if not info & 0xC0:
                if buf[pos] == 1:
                    parent, pos = _string(buf, pos + 1)
                else:
                    parent, pos = _id(buf, _var_uint(buf, pos)[1])
                if info & 0x20:
                    parent_sub, pos = _string(buf, pos)
            text = None
            size = 0
            type_ref = None
            if ref == STRING:
                size, pos = _var_uint(buf, pos)
                end = pos + size
                if end > len(buf):
                    raise IndexError(end)
                text = buf[pos:end].decode("utf-8", "surrogatepass")
                pos = end
                length = size if size == len(text) else utf16_len(text)
            else:
                length, type_ref, pos = _skip_content(buf, pos, ref)
            yield Struct(
                client,
                clock,
                length,
                ref,
                origin,
                right_origin,
                parent,
                parent_sub,
                bool(info & 0x20),
                text,
                size,
                type_ref,
            )
            clock += length
    return pos


def _malformed(update: bytes) -> UpdateDecodeError:
    return UpdateDecodeError(f"truncated or malformed update ({len(update)} bytes)")


def iter_structs(update: bytes) -> Iterator[Struct]:
    """The structs of a Yjs v1 update, in its order: by client, each in clock order.

    Decoding is lazy: stop early to decode only the beginning of an update.

    Raises:
        UpdateDecodeError: The bytes are truncated or use an unknown encoding.
    """
    try:
        yield from _read_structs(update)
    except (IndexError, UnicodeDecodeError) as exc:
        raise _malformed(update) from exc


def decode_update(update: bytes) -> Update:
    """Decode a Yjs v1 update (e.g. ``Doc.get_update()``).

    Raises:
        UpdateDecodeError: The bytes are truncated or use an unknown encoding.
    """
    structs: dict[int, list[Struct]] = {}
    deleted: dict[int, list[tuple[int, int]]] = {}
    reader = _read_structs(update)
    try:
        while True:
            try:
                s = next(reader)
            except StopIteration as done:
                pos: int = done.value
                break
            structs.setdefault(s.client, []).append(s)
        clients, pos = _var_uint(update, pos)
        for _ in range(clients):
            client, pos = _var_uint(update, pos)
            spans = deleted.setdefault(client, [])
            n, pos = _var_uint(update, pos)
            for _ in range(n):
                clock, pos = _var_uint(update, pos)
                length, pos = _var_uint(update, pos)
                spans.append((clock, length))
    except (IndexError, UnicodeDecodeError) as exc:
        raise _malformed(update) from exc
    if pos != len(update):
        raise UpdateDecodeError(f"{len(update) - pos} bytes left after the update")
    for out in structs.values():
        out.sort(key=lambda s: s.clock)
    return Update(structs, DeleteSet(deleted))


def encode_state_vector(state: Mapping[int, int]) -> bytes:
    """A Yjs state vector (client -> next clock), as ``Doc.get_state()`` encodes it."""
    out = bytearray()

    def var_uint(n: int) -> None:
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    var_uint(len(state))
    for client, clock in state.items():
        var_uint(client)
        var_uint(clock)
    return bytes(out)


def utf16_len(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (the unit of Yjs string clocks)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2
