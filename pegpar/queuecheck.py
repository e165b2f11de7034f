"""The whole queue, checked before a run takes anything from it.

A run that met a bad entry only when it reached the head would have run the
entries above it already. So at start every entry is read as a pop would
read it, its templates compiled and its variables and slot counts checked
against the sub-nodes, all without expanding a sweep: a sweep of 10^9
combinations costs what its text costs. Every bad entry is reported (up to
MAX_LISTED of them) as FILE:LINE: problem.

Speed: a queue of tens of thousands of entries is checked in a fraction of a
second. Entries in the common shapes (`- command text`, and maps of
`key: value` / `key: [a, b]` lines) are read by `quick_entry`, a reader of
that small subset of YAML which gives exactly what the YAML reader gives, or
None, and then the YAML reader has the entry.
"""

from __future__ import annotations

import functools
import re
from typing import IO, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple, Union

from pegpar import expand, placement, queuetext, spec, template
from pegpar.errors import UserError
from pegpar.expand import SubNode
from pegpar.queuetext import Item
from pegpar.spec import QueueEntry, Scalar, Source

MAX_LISTED = 10
# where the next item starts: `\n-` then a blank; at the end of the file also `\n-` alone
_NEXT_ITEM = re.compile(rb"\n-(?:[ \t\n]|\r\n)")
_LAST_ITEM = re.compile(rb"\n-(?:[ \t\n]|\r\n|\r?\Z)")


def check(path: str, nodes: Sequence[SubNode], every_node: bool = False) -> List[UserError]:
    """The queue file's errors, in file order (at most MAX_LISTED + 1: one more
    says there are more). `every_node`: a command must render on every
    sub-node (broadcast), not only on one."""
    errors: List[UserError] = []
    host_names = {name for node in nodes for name, _ in node.params}
    name_sets = list(dict.fromkeys(frozenset(node.variables()) | frozenset(expand.RUN_VARIABLES)
                                   for node in nodes))
    for entry in _entries(path):
        try:
            if isinstance(entry, UserError):
                raise entry
            dims = dict(entry.dims)
            if host_names and host_names.intersection(dims):
                expand.check_collisions(entry, tuple(nodes))
            if "slots" in dims:
                placement.check_slots([entry], nodes)
            own = frozenset(dims).difference(("command",))
            for command in dict.fromkeys(dims["command"]):
                _check_template(str(command), own, name_sets, every_node, entry.source)
        except UserError as err:
            errors.append(err)
            if len(errors) > MAX_LISTED:
                break
    return errors


def _entries(path: str) -> Iterator[Union[QueueEntry, UserError]]:
    """The file's entries in order, or for a bad one its error."""
    try:
        f = open(path, "rb")
    except OSError:
        return  # the run says what is wrong with the file itself
    with f:
        if queuetext.flow_list(f):
            try:
                yield from spec.parse_queue(f.read().decode("utf-8", "surrogateescape").lstrip("\ufeff"), path)
            except UserError as err:
                yield err
            return
        try:
            first = queuetext.Scanner(f, path).head()
        except UserError as err:
            yield err
            return
        if first is None:
            return
        anchors = spec.Anchors()
        for start, line, text in _split(f, first):
            if text is None:
                yield UserError(f"entry is larger than {queuetext.MAX_ENTRY_BYTES >> 20} MiB",
                                where=f"{path}:{line}", hint="split it into smaller entries")
                continue
            entry = quick_entry(text, path, line)
            if entry is None:
                try:
                    entry = queuetext.parse_item(Item(start, start + len(text), start + len(text), line, text),
                                                 path, anchors)
                except UserError as err:
                    yield err
                    continue
            yield entry


_CHUNK = 1 << 20


def _split(f: IO[bytes], first: queuetext.Line) -> Iterator[Tuple[int, int, Optional[bytes]]]:
    """The file's items from the first one on, read a chunk at a time: (offset,
    line, text up to the next item; None for an item over MAX_ENTRY_BYTES, which
    is never held whole)."""
    f.seek(first.offset)
    item_at, item_line = first.offset, first.number
    buf, buf_at, buf_line = b"", first.offset, first.number  # buf starts at buf_at, on buf_line
    skipping = False  # in an item too large to hold: only the last bytes are kept
    while True:
        chunk = f.read(_CHUNK)
        buf += chunk
        pattern = _NEXT_ITEM if chunk else _LAST_ITEM
        pos = 0  # where the current item starts in buf
        for match in pattern.finditer(buf):
            cut = match.start() + 1
            yield item_at, item_line, None if skipping or cut - pos > queuetext.MAX_ENTRY_BYTES else buf[pos:cut]
            buf_line += buf.count(b"\n", pos, cut)
            item_at, item_line, skipping = buf_at + cut, buf_line, False
            pos = cut
        buf_at += pos
        buf = buf[pos:]
        if not chunk:
            if buf:
                yield item_at, item_line, None if skipping or len(buf) > queuetext.MAX_ENTRY_BYTES else buf
            return
        skipping = skipping or len(buf) > queuetext.MAX_ENTRY_BYTES
        if skipping and len(buf) > 3:  # keep what may start `\n- ` across chunks
            drop = len(buf) - 3
            buf_line += buf.count(b"\n", 0, drop)
            buf_at += drop
            buf = buf[drop:]


def _check_template(command: str, own: FrozenSet[str], name_sets: Sequence[FrozenSet[str]], every_node: bool,
                    source: Source) -> None:
    if not template.is_template(command):
        return
    first: Optional[UserError] = None
    for names in name_sets:
        try:
            template.check(command, own | names, source)
        except UserError as err:
            if every_node:
                raise
            first = first or err
        else:
            if not every_node:
                return
    if first is not None:
        raise first


# --- the quick reader ---------------------------------------------------------
# A plain scalar in block context that reads as its text: no indicator first,
# no `: ` or ` #` inside, no control or odd characters.
_BLOCK_PLAIN = re.compile(r"[^\s\-?:,\[\]{}#&*!|>'\"%@`][^\t]*")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: +(?=[^ ])|$)")
_FLOW_PLAIN = re.compile(r"[A-Za-z0-9_./+=^-](?:[A-Za-z0-9_./+=^ -]*[A-Za-z0-9_./+=^-])?")
_COMMENT = re.compile(r" +#")
_SIMPLE_FLOW = re.compile(r"\[([^\[\]{}'\"#]*)\](?: *| +#.*)")
_SPECIAL_KEYS = ("command", "hostname", "slots", "allocation_policy")


def quick_entry(text: bytes, path: str, line: int) -> Optional[QueueEntry]:
    """The entry of one item's text, when it is in the subset read here; else None."""
    if b"\r" in text or b"\t" in text or not text.startswith(b"- "):
        return None
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    head = lines[0][2:]
    rest = [s for s in lines[1:] if s.strip(" ") and s.lstrip(" ")[:1] != "#"]
    match = _KEY.match(head)
    if match is None:
        value = None if rest else _block_value(head)
        if value is None or not isinstance(value, str) and not isinstance(value, (int, float)):
            return None
        command = spec.scalar_text(value)
        return QueueEntry((("command", (command,)),), Source(path, line), plain=True) if command.strip() else None
    dims: List[Tuple[str, Tuple[Scalar, ...]]] = []
    seen: Set[str] = set()
    i = -1
    body = head
    while True:
        name = match.group(1)
        if name in seen or (name in _SPECIAL_KEYS and name != "command") or name in spec.RESERVED:
            return None
        seen.add(name)
        value_text = body[match.end():]
        if value_text:
            values = _values(value_text)
        else:  # a block list: `- value` lines, indented 2 or 4
            items = []
            while i + 1 < len(rest) and rest[i + 1][2:4] == "- " and rest[i + 1][:2] == "  ":
                i += 1
                items.append(_item_value(rest[i][4:]))
            while not items and i + 1 < len(rest) and rest[i + 1][:6] == "    - ":
                i += 1
                items.append(_item_value(rest[i][6:]))
                while i + 1 < len(rest) and rest[i + 1][:6] == "    - ":
                    i += 1
                    items.append(_item_value(rest[i][6:]))
            values = tuple(items) if items and None not in items else None
        if values is None or name == "command" and not all(isinstance(v, str) and v.strip() for v in values):
            return None
        dims.append((name, values))
        i += 1
        if i == len(rest):
            break
        body = rest[i]
        match = _KEY.match(body, 2) if body[:2] == "  " else None
        if match is None:
            return None
    if "command" not in seen:
        return None
    return QueueEntry(tuple(dims), Source(path, line))


def _item_value(text: str) -> Optional[Scalar]:
    if text[:1] not in ("'", '"'):
        return _block_value(text)
    quoted = _quoted(text, 0)
    if quoted is None:
        return None
    value, end = quoted
    tail = text[end:]
    return None if tail.strip(" ") and not _COMMENT.match(tail) else value


def _quoted(text: str, i: int) -> Optional[Tuple[str, int]]:
    """The quoted scalar that starts at text[i] (`'...'` with `''` for a quote,
    or `"..."` without escapes) and where it ends; None for anything else."""
    quote = text[i]
    chunks = []
    j = i + 1
    while True:
        k = text.find(quote, j)
        if k < 0:
            return None
        chunks.append(text[j:k])
        if quote == "'" and text[k + 1:k + 2] == "'":
            chunks.append("'")
            j = k + 2
            continue
        value = "".join(chunks)
        if quote == '"' and "\\" in value or not value.isprintable():
            return None  # an escape: the YAML reader has it
        return value, k + 1


def _values(text: str) -> Optional[Tuple[Scalar, ...]]:
    if text.startswith("["):
        return _flow_list(text)
    value = _block_value(text)
    return None if value is None else (value,)


def _block_value(text: str) -> Optional[Scalar]:
    body = _uncomment(text)
    if not body or not _BLOCK_PLAIN.fullmatch(body) or ": " in body or body.endswith(":") \
            or not body.isprintable():
        return None
    value = spec.read_plain(body)
    return None if value is None or value is True or value is False else value


def _uncomment(text: str) -> str:
    cut = text.find(" #")
    return (text if cut < 0 else text[:cut]).rstrip(" ")


def _flow_list(text: str) -> Optional[Tuple[Scalar, ...]]:
    simple = _SIMPLE_FLOW.fullmatch(text)
    if simple is not None:  # no quotes: the values are what the commas part
        values = tuple(_flow_plain(part.strip(" ")) for part in simple.group(1).split(","))
        return None if None in values else values
    return _quoted_flow_list(text)


@functools.lru_cache(maxsize=4096)
def _flow_plain(text: str) -> Optional[Scalar]:
    if not _FLOW_PLAIN.fullmatch(text) or text[:1] == "-" and not text[1:2].isdigit():
        return None
    typed = spec.read_plain(text)
    return None if typed is None or typed is True or typed is False else typed


def _quoted_flow_list(text: str) -> Optional[Tuple[Scalar, ...]]:
    values: List[Scalar] = []
    i = 1
    n = len(text)
    while True:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            return None
        if text[i] in ("'", '"'):
            quoted = _quoted(text, i)
            if quoted is None:
                return None
            value, i = quoted
        else:
            match = _FLOW_PLAIN.match(text, i)
            typed = None if match is None else _flow_plain(match.group())
            if typed is None:
                return None
            value, i = typed, match.end()
        values.append(value)
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            return None
        if text[i] == ",":
            i += 1
            continue
        if text[i] != "]":
            return None
        tail = text[i + 1:]
        return tuple(values) if not tail.strip(" ") or _COMMENT.match(tail) else None
