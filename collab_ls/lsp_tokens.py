"""Semantic tokens and signature labels between two ends' encodings and legends.

Besides positions (:mod:`collab_ls.lsp_json`), two LSP results count
characters without ``Position`` objects, and are rewritten here when a
guest's editor and the host's language server count in different units
(UTF-8, UTF-16, UTF-32):

* **Semantic tokens**, packed as integers in LSP's relative encoding:
  :func:`convert_semantic_tokens` converts their starts and lengths using the
  text of their lines, and :func:`remap_token_legend` renumbers their types
  and modifiers when the two ends use different legends
  (:data:`STANDARD_LEGEND` is LSP's own).
* **Signature help** parameter labels given as ``[start, end]`` offsets into
  their signature's label: :func:`convert_signature_offsets`.

The per-line unit map used for both tokens and positions (``_LineMap``) lives
here too. Every function is pure: it returns new structures and never mutates
its input.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from types import MappingProxyType
from typing import Any

from collab_ls.linetext import LineText
from collab_ls.units import Encoding, PositionError, index_to_units, units_len, units_to_index

__all__ = [
    "STANDARD_LEGEND", "convert_semantic_tokens", "convert_signature_offsets",
    "remap_token_legend", "token_delta",
]  # fmt: skip

# -- one line's units -----------------------------------------------------------------


class _LineMap:
    """Converts ``character`` offsets within one line's content from ``src`` to ``dst``."""

    __slots__ = ("_dst", "_src", "dst_len", "src_len")

    def __init__(self, content: str, src: Encoding, dst: Encoding) -> None:
        self._src: list[int] | None = None
        self._dst: list[int] | None = None
        if content.isascii():
            self.src_len = self.dst_len = len(content)
            return
        # One pass builds every boundary; each lookup is then a bisection.
        self._src = list(accumulate((units_len(c, src) for c in content), initial=0))
        self._dst = list(accumulate((units_len(c, dst) for c in content), initial=0))
        self.src_len, self.dst_len = self._src[-1], self._dst[-1]

    def clamp(self, units: int) -> int:
        """Convert ``units``: past the end means the end; inside a character, its start."""
        if units >= self.src_len:
            return self.dst_len
        if self._src is None or self._dst is None:
            return max(units, 0)
        return self._dst[bisect_right(self._src, units) - 1] if units > 0 else 0

    def extend(self, units: int) -> int:
        """Like :meth:`clamp`, but units past the line's end are kept past it."""
        if units <= self.src_len:
            return self.clamp(units)
        return self.dst_len + units - self.src_len


def _line_map(lines: LineText, line: int, src: Encoding, dst: Encoding) -> _LineMap:
    # A line has at most one terminator, so stripping every \r and \n strips just it.
    return _LineMap(lines.line(line).rstrip("\r\n"), src, dst)


# -- semantic tokens ------------------------------------------------------------------

STANDARD_LEGEND: Mapping[str, Sequence[str]] = MappingProxyType(
    {
        "tokenTypes": (
            "namespace", "type", "class", "enum", "interface", "struct", "typeParameter",
            "parameter", "variable", "property", "enumMember", "event", "function", "method",
            "macro", "keyword", "modifier", "comment", "string", "number", "regexp", "operator",
            "decorator",
        ),
        "tokenModifiers": (
            "declaration", "definition", "readonly", "static", "deprecated", "abstract",
            "async", "modification", "documentation", "defaultLibrary",
        ),
    }
)  # fmt: skip
"""The token types and modifiers predefined by LSP 3.17, as a ``SemanticTokensLegend``."""

_Token = tuple[int, int, int, int, int]  # line, start, length, type, modifiers (absolute)


def _decode_tokens(data: Sequence[int]) -> list[_Token]:
    if len(data) % 5:
        raise ValueError(f"semantic token data of length {len(data)} is not a multiple of 5")
    out: list[_Token] = []
    line = start = 0
    for i in range(0, len(data), 5):
        d_line, d_start, length, typ, mods = data[i : i + 5]
        start = start + d_start if d_line == 0 else d_start
        line += d_line
        out.append((line, start, length, typ, mods))
    return out


def _encode_tokens(tokens: Sequence[_Token]) -> list[int]:
    out: list[int] = []
    prev_line = prev_start = 0
    for line, start, length, typ, mods in tokens:
        d_start = start - prev_start if line == prev_line else start
        out += (line - prev_line, d_start, length, typ, mods)
        prev_line, prev_start = line, start
    return out


def convert_semantic_tokens(
    data: Sequence[int], lines: LineText, src: Encoding, dst: Encoding
) -> list[int]:
    """Convert semantic token data (LSP's relative encoding) from ``src`` to ``dst`` units.

    Starts and lengths are converted with the text of their lines; a start
    inside a character moves to its start. Units past a line's end (a
    multi-line token) are kept as they are, and tokens on lines past the end of
    ``lines`` are left unchanged.

    Raises:
        ValueError: ``len(data)`` is not a multiple of 5.
    """
    tokens = _decode_tokens(data)
    if src == dst:
        return _encode_tokens(tokens)
    maps: dict[int, _LineMap] = {}
    out: list[_Token] = []
    for line, start, length, typ, mods in tokens:
        if line >= lines.line_count:
            out.append((line, start, length, typ, mods))
            continue
        if line not in maps:
            maps[line] = _line_map(lines, line, src, dst)
        m = maps[line]
        new_start = m.extend(start)
        out.append((line, new_start, m.extend(start + length) - new_start, typ, mods))
    return _encode_tokens(out)


def remap_token_legend(
    data: Sequence[int],
    from_legend: Mapping[str, Sequence[str]],
    to_legend: Mapping[str, Sequence[str]],
) -> list[int]:
    """Renumber semantic tokens' types and modifiers from one legend to another, by name.

    Tokens of a type ``to_legend`` lacks are dropped (the tokens after them
    keep their positions); modifiers it lacks are dropped from the bitsets.

    Args:
        data: Token data in LSP's relative encoding, numbered by ``from_legend``.
        from_legend: A ``SemanticTokensLegend``: ``{"tokenTypes": [...],
            "tokenModifiers": [...]}``.
        to_legend: The legend to number by.

    Raises:
        ValueError: ``len(data)`` is not a multiple of 5.
    """
    # reversed(): a name the target legend lists twice gets its first index.
    type_index = {n: i for i, n in reversed(list(enumerate(to_legend.get("tokenTypes", ()))))}
    mod_bit = {n: 1 << i for i, n in reversed(list(enumerate(to_legend.get("tokenModifiers", ()))))}
    types = [type_index.get(name) for name in from_legend.get("tokenTypes", ())]
    bits = [mod_bit.get(name, 0) for name in from_legend.get("tokenModifiers", ())]
    out: list[_Token] = []
    for line, start, length, typ, mods in _decode_tokens(data):
        new_type = types[typ] if 0 <= typ < len(types) else None
        if new_type is None:
            continue
        new_mods = 0
        for i, bit in enumerate(bits):
            if mods >> i & 1:
                new_mods |= bit
        out.append((line, start, length, new_type, new_mods))
    return _encode_tokens(out)


# -- signature help -------------------------------------------------------------------


def convert_signature_offsets(result: Any, src: Encoding, dst: Encoding) -> Any:
    """A ``SignatureHelp`` whose ``[start, end]`` parameter labels count ``dst`` units.

    Parameter labels may be offsets into their signature's label, counted in
    the position encoding; out-of-range or mid-character offsets are clamped
    to the label and snapped back to a character start.
    """
    if src == dst or not isinstance(result, dict):
        return result
    signatures = result.get("signatures")
    if not isinstance(signatures, list):
        return result

    def convert(label: str, units: int) -> int:
        total = units_len(label, src)
        units = max(0, min(units, total))
        while True:
            try:
                return index_to_units(label, units_to_index(label, units, src), dst)
            except PositionError:
                units -= 1

    out_sigs: list[Any] = []
    for sig in signatures:
        if not isinstance(sig, dict) or not isinstance(sig.get("label"), str):
            out_sigs.append(sig)
            continue
        params = sig.get("parameters")
        if not isinstance(params, list):
            out_sigs.append(sig)
            continue
        new_params: list[Any] = []
        for p in params:
            lab = p.get("label") if isinstance(p, dict) else None
            if (
                isinstance(lab, list)
                and len(lab) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in lab)
            ):
                p = {**p, "label": [convert(sig["label"], lab[0]), convert(sig["label"], lab[1])]}
            new_params.append(p)
        out_sigs.append({**sig, "parameters": new_params})
    return {**result, "signatures": out_sigs}


def token_delta(old: Sequence[int], new: Sequence[int]) -> list[dict[str, Any]]:
    """The ``SemanticTokensEdit`` list that turns ``old`` token data into ``new``.

    One edit over what lies between the common prefix and the common suffix
    (in whole tokens, so no edit splits one); none if they are equal.
    """
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    prefix -= prefix % 5
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    suffix -= suffix % 5
    if prefix == len(old) == len(new):
        return []
    return [
        {
            "start": prefix,
            "deleteCount": len(old) - prefix - suffix,
            "data": list(new[prefix : len(new) - suffix]),
        }
    ]
