"""YAML anchors across queue entries, kept valid while pops take entries.

Users share value lists between entries (`lr: &lrs [0.1, 0.01]` in one entry,
`lr: *lrs` in later ones). A pop rewrites only the entries it takes, so the
entry holding an anchor can leave the file (or come back as its remaining
products, written out without the anchor) while later entries still use it.
Before that happens the anchor moves: the first later alias is replaced by the
anchored value itself, written in flow style under the same anchor
(`lr: &lrs [0.1, 0.01]`), so every later alias still finds it. An anchor
defined again further down needs nothing: the aliases after it use the new one.
"""

from __future__ import annotations

import json
import mmap
import re
from typing import IO, Dict, List, Optional, Sequence, Set, Tuple

import yaml

from pegpar.durable import Cut
from pegpar.yamltree import Node, Null, read_plain, scalar_text

_ITEM_START = re.compile(rb"^-(?:[ \t\r\n]|$)", re.M)
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+=@%-]*")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def flow_text(node: Node) -> str:
    """`node` as one line of flow-style YAML that reads back as the same values."""
    if node.kind == "seq":
        return "[" + ", ".join(flow_text(n) for n in node.value) + "]"
    if node.kind == "map":
        return "{" + ", ".join(f"{flow_text(k)}: {flow_text(v)}" for k, v in node.value) + "}"
    value = node.value
    if isinstance(value, Null):
        return value if value else "~"
    if not isinstance(value, str):
        return scalar_text(value)  # typed only when it reads back as written
    if _PLAIN.fullmatch(value) and read_plain(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)  # JSON strings are YAML double-quoted scalars


def moves(src: IO[bytes], cuts: Sequence[Cut], defined: Sequence[Tuple[Cut, Sequence[Tuple[str, Node]]]]
          ) -> List[Cut]:
    """The edits that keep anchors alive. `cuts` are a pop's edits, in file
    order; `defined` pairs each of them whose item anchored values with its
    (name, node) pairs. Returns a Cut for each alias that becomes an anchor's
    new home."""
    if not defined:
        return []
    names = {(cut.start, cut.stop): {name for name, _ in pairs} for cut, pairs in defined}
    out: List[Cut] = []
    with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for cut, pairs in defined:
            for name, node in pairs:
                at = _first_use(data, name, cut.stop, cuts, names)
                if at is not None:
                    out.append(Cut(at[0], at[1], f"&{name} {flow_text(node)}".encode()))
    return out


def _first_use(data: mmap.mmap, name: str, start: int, cuts: Sequence[Cut],
               names: Dict[Tuple[int, int], Set[str]]) -> Optional[Tuple[int, int]]:
    """Byte range of the first alias *name after `start` in text the pop
    keeps, unless the anchor is defined again first (then None)."""
    needles = (b"*" + name.encode(), b"&" + name.encode())
    pos = start
    while True:
        found = [p for p in (data.find(n, pos) for n in needles) if p >= 0]
        if not found:
            return None
        p = min(found)
        cut = next((c for c in cuts if c.start <= p < c.stop), None)
        if cut is not None:
            if name in names.get((cut.start, cut.stop), ()):
                return None  # anchored again by a taken item: its own move covers what follows
            pos = cut.stop
            continue
        item_start, item_end = _item_around(data, p)
        hit = _event_at(bytes(data[item_start:item_end]), name)
        if hit is None:
            pos = item_end  # not an anchor or alias there (inside a quoted value, say)
            continue
        kind, a, b = hit
        if kind == "anchor":
            return None
        return item_start + a, item_start + b


def _item_end(data: mmap.mmap, start: int) -> int:
    match = _ITEM_START.search(data, start + 1)
    return match.start() if match else len(data)


def _item_around(data: mmap.mmap, p: int) -> Tuple[int, int]:
    """The item holding offset p: from its `- ` line to the next one."""
    line = data.rfind(b"\n", 0, p) + 1
    while line > 0 and not _ITEM_START.match(data, line):
        line = data.rfind(b"\n", 0, line - 1) + 1
    return line, _item_end(data, line)


def _event_at(text: bytes, name: str) -> Optional[Tuple[str, int, int]]:
    """The first alias *name or anchor &name of an item's YAML: its kind and
    byte range within the item."""
    decoded = text.decode("utf-8", "replace")
    loader = _Loader(decoded)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent) and event.anchor == name:
                a, b = event.start_mark.index, event.end_mark.index
                return "alias", len(decoded[:a].encode()), len(decoded[:b].encode())
            if getattr(event, "anchor", None) == name:
                return "anchor", 0, 0
    except yaml.YAMLError:
        return None  # a broken item: the pop that reaches it says so
    finally:
        loader.dispose()
    return None
