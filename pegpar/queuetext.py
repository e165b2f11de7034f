"""The queue file as text: cut into top-level list items by a line scan,
without parsing the whole file; the head items parsed one at a time; the
edit that takes jobs from an item; and the check of a whole text against the
layout the scan relies on (see queue.py's docstring)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Callable, List, Optional, Sequence, Tuple, Union

import yaml

from pegpar import expand, spec
from pegpar.durable import Cut
from pegpar.errors import UserError
from pegpar.expand import Job
from pegpar.spec import Params, QueueEntry

# One entry's text is held in memory to parse it; a larger entry is refused
# rather than letting a runaway file exhaust memory.
MAX_ENTRY_BYTES = 16 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ITEM, _BLANK, _COMMENT0, _COMMENT, _DOC, _EMPTY, _CONTENT = range(7)


@dataclass(frozen=True)
class Line:
    offset: int
    number: int  # 1-based
    data: bytes  # the line, or its first MAX_ENTRY_BYTES + 1 bytes
    size: int  # its full length in the file


@dataclass(frozen=True)
class Item:
    """One top-level list item: [start, end) is its text up to its last line of
    content, [end, blank_end) the blank lines right after it."""

    start: int
    end: int
    blank_end: int
    line: int
    text: bytes  # [start, blank_end): trailing blank lines can belong to a `|+` scalar


def _kind(data: bytes) -> int:
    s = data.rstrip(b"\r\n")
    if s[:1] == b"-" and s[1:2] in (b"", b" ", b"\t"):
        return _ITEM
    body = s.strip(b" \t")
    if not body:
        return _BLANK
    if s[:1] == b"#":
        return _COMMENT0
    if body[:1] == b"#":
        return _COMMENT
    value = body.split(b"#", 1)[0].strip()
    if value in (b"[]", b"--- []"):
        return _EMPTY
    if value == b"---" or s[:1] == b"%":
        return _DOC
    return _CONTENT


class Scanner:
    """Reads a queue file line by line, holding at most one entry in memory."""

    def __init__(self, f: IO[bytes], path: str):
        self._f = f
        self._path = path
        self._offset = 0
        self._number = 0
        self.empty_marker: Optional[Line] = None
        self.following: Optional[Line] = None  # first line of the item after the last one read

    def _next(self) -> Optional[Line]:
        offset = self._offset
        data = self._f.readline(MAX_ENTRY_BYTES + 1)
        size = len(data)
        if size > MAX_ENTRY_BYTES and not data.endswith(b"\n"):
            while True:  # skip the rest of an overlong line
                more = self._f.readline(1 << 16)
                size += len(more)
                if not more or more.endswith(b"\n"):
                    break
        if not size:
            return None
        self._offset += size
        self._number += 1
        return Line(offset, self._number, data, size)

    def head(self) -> Optional[Line]:
        """Skip the file's header; the first line of the first item, or None."""
        while True:
            line = self._next()
            if line is None:
                return None
            data = line.data[len(BOM):] if line.number == 1 and line.data.startswith(BOM) else line.data
            kind = _kind(data)
            if kind == _ITEM and self.empty_marker is None:
                return line
            if kind == _EMPTY and self.empty_marker is None:
                self.empty_marker = line
            elif kind not in (_BLANK, _COMMENT0, _COMMENT, _DOC):
                raise UserError(
                    "the queue must be a block-style list: pegpar reads it one entry at a time, each "
                    "entry starting with `- ` at column 0", where=f"{self._path}:{line.number}",
                    hint="write flow style `[a, b]` as one `- a` line per entry")

    def item(self, first: Line) -> Item:
        """Read the item that starts at `first`; sets `following`."""
        end = blank_end = first.offset + first.size
        in_blanks = True
        line = first
        self.following = None
        while True:
            if line.offset + line.size - first.offset > MAX_ENTRY_BYTES:
                raise UserError(f"entry is larger than {MAX_ENTRY_BYTES >> 20} MiB",
                                where=f"{self._path}:{first.number}", hint="split it into smaller entries")
            line = self._next()
            if line is None:
                break
            kind = _kind(line.data)
            if kind == _ITEM:
                self.following = line
                break
            if kind == _BLANK:
                if in_blanks:
                    blank_end = line.offset + line.size
            elif kind == _COMMENT0:
                in_blanks = False
            else:
                end = blank_end = line.offset + line.size
                in_blanks = True
        self._f.seek(first.offset)
        text = self._f.read(blank_end - first.offset)
        self._f.seek(self._offset)
        return Item(first.offset, end, blank_end, first.number, text)


def parse_item(item: Item, path: str, anchors: Optional[spec.Anchors] = None) -> QueueEntry:
    """The item's entry. `anchors` holds those of the items before it in the
    file; its `defined` becomes the names this item anchors."""
    where = f"{path}:{item.line}"
    try:
        text = item.text.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise UserError("entry is not valid UTF-8 text", where=where) from None
    if anchors is not None:
        anchors.defined = []
    entries = spec.parse_queue(text, path, first_line=item.line, anchors=anchors)
    if len(entries) != 1:
        raise UserError("expected one queue entry here", where=where)
    return entries[0]


def take_from(entry: QueueEntry, k: int, accept: Callable[[Job], None]
               ) -> Tuple[List[Job], List[Params], Optional[UserError]]:
    """Take up to k combinations of one entry, in order: (jobs, what remains of
    the entry as products, the error that stopped it)."""
    products: List[Params] = [entry.dims]
    jobs: List[Job] = []
    while products and len(jobs) < k:
        job = expand.first_job(QueueEntry(products[0], entry.source, entry.plain))
        try:
            accept(job)
        except UserError as err:
            return jobs, products, err
        jobs.append(job)
        products = expand.remainder(products[0]) + products[1:]
    return jobs, products, None


def cut_for(item: Item, rest: Sequence[Params], plain: bool) -> Cut:
    """The edit for a taken item: gone with its trailing blank lines, or its
    text replaced by the remaining products (the blank lines stay)."""
    start = item.start + (len(BOM) if item.start == 0 and item.text.startswith(BOM) else 0)  # the file's
    if not rest:
        return Cut(start, item.blank_end, b"")
    text = items_text([expand.canonical_entry(p, plain) for p in rest])
    if item.text.split(b"\n", 1)[0].endswith(b"\r"):
        text = text.replace(b"\n", b"\r\n")
    blanks = item.text[item.end - item.start:]
    if blanks and yaml.load(text + blanks, Loader=_Loader) != yaml.load(text, Loader=_Loader):
        return Cut(start, item.blank_end, text)  # a `|+` scalar would swallow the blank lines
    return Cut(start, item.end, text)


def items_text(objs: List[Union[str, dict]]) -> bytes:
    """Canonical list items to splice into a file. PyYAML ends a stream whose
    last scalar keeps its trailing newlines (`|+`) with a `...` document end,
    which in the middle of a file would start a second document: drop it (the
    next item, at column 0, ends the scalar just as well)."""
    text = expand.dump_yaml_items(objs)
    if text.endswith("\n...\n"):
        text = text[:-len("...\n")]
    return text.encode()


def document_end(f: IO[bytes], end: int) -> int:
    """Where entries appended to the file go: before a `...` line that ends
    its YAML document (only blank lines and comments after it), else at `end`.
    Looks at the file's last 64 KiB."""
    size = min(end, 1 << 16)
    f.seek(end - size)
    lines = f.read(size).splitlines(keepends=True)
    at = end
    for i, line in enumerate(reversed(lines)):
        at -= len(line)
        if i == len(lines) - 1 and size < end:
            return end  # the chunk's first line, maybe cut short: not known
        body = line.rstrip(b"\r\n")
        if body.startswith(b"...") and body.split(b"#", 1)[0].rstrip(b" \t") == b"...":
            return at
        if body.strip(b" \t") and not body.lstrip(b" \t").startswith(b"#"):
            return end  # an entry's text: appended after it
    return end


def ends_line(f: IO[bytes], offset: int) -> bool:
    if offset == 0:
        return True
    f.seek(offset - 1)
    return f.read(1) == b"\n"


def flow_list(f: IO[bytes]) -> bool:
    """Whether the file is a flow-style list (`[a, b]`, not the empty `[]`):
    its first line that is not blank, a comment or a document marker opens
    one. Leaves the file at its start."""
    try:
        first = True
        while True:
            data = f.readline(4096)  # a line is judged by its start: a huge one is never held
            if not data:
                return False
            if first and data.startswith(BOM):
                data = data[len(BOM):]
            first = False
            kind = _kind(data)
            if kind not in (_BLANK, _COMMENT0, _COMMENT, _DOC):
                return kind == _CONTENT and data.lstrip(b" \t").startswith(b"[")
            while not data.endswith(b"\n"):  # the rest of a long comment line
                data = f.readline(4096)
                if not data:
                    return False
    finally:
        f.seek(0)


def check_text(data: bytes, path: str) -> Tuple[QueueEntry, ...]:
    """Validate a whole queue text as pops will read it: valid entries (errors
    name path:LINE) and a layout that cuts into one entry per `- ` item."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError("not valid UTF-8 text", where=f"{path}:{line}") from None
    entries = spec.parse_queue(text.lstrip("\ufeff"), path)
    check_templates(entries)
    scanner = Scanner(io.BytesIO(data), path)
    line = scanner.head()
    count = 0
    anchors = spec.Anchors()
    while line is not None:
        item = scanner.item(line)
        line = scanner.following
        try:
            parse_item(item, path, anchors)
        except UserError as err:
            raise UserError(err.message, where=err.where,
                            hint="pegpar reads the queue one `- ` item at a time: indent every line of an entry "
                            "after its first") from None
        count += 1
    if count != len(entries):
        raise UserError(f"found {count} entries starting with `- ` at column 0 but the file holds {len(entries)}",
                        where=path, hint="start each entry with `- ` at column 0")
    return entries


def check_templates(entries: Sequence[QueueEntry]) -> None:
    """Template syntax errors, which a pop would stop at (variables are the
    sub-nodes' business, checked when a job is placed)."""
    from pegpar import template

    for entry in entries:
        for command in entry.commands:
            template.check_syntax(command, entry.source)
