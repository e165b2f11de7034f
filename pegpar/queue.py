"""The file queue: lock, take the head, push back remainders, append consumed.yaml.

queue.yaml is the queue itself, so a pop must leave the file as the user wrote
it. The file is never parsed as a whole here: a line scan cuts it into
top-level list items (a line starting with "- " at column 0 opens an item) and
only the head items are handed to YAML. A pop rewrites the text of the items it
took and copies every other byte; the new file replaces the old one atomically.

Layout rules the scan relies on (checked, with FILE:LINE errors):
- before the first item: blank lines, comments, `---`, `%` directives, and an
  empty-list marker `[]` (an empty queue);
- an item runs until the next line starting with "- " at column 0; after its
  last line of content, blank lines belong to it and column-0 comments belong
  to whatever follows (they stay in the file when the item is taken);
- anything else (flow style `[a, b]`, an indented or a non-list document) is
  refused rather than rewritten, since a canonical rewrite would drop the
  user's comments and layout.

The lock is `<queue>.lock`, an OS lock (filelock), so a killed holder leaves
nothing behind. `take` never waits for it; `add` and `pegpar l` do.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import filelock
import yaml

from pegpar import expand, spec
from pegpar.errors import UserError
from pegpar.expand import Job
from pegpar.spec import Params, QueueEntry, Source

CONSUMED_FILE = "consumed.yaml"
REJECTED_SUFFIX = ".rejected"
# One entry's text is held in memory to parse it; a larger entry is refused
# rather than letting a runaway file exhaust memory.
MAX_ENTRY_BYTES = 16 * 1024 * 1024
# A lock held longer than this is worth telling the waiting user about; a pop
# holds it for milliseconds.
_QUIET_WAIT = 0.5

_BOM = b"\xef\xbb\xbf"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ITEM, _BLANK, _COMMENT0, _COMMENT, _DOC, _EMPTY, _CONTENT = range(7)


def lock_path(path: str) -> str:
    return os.path.realpath(path) + ".lock"


def check_queue_file(path: str, allow_shared: bool = False) -> None:
    """Refuse, before anything runs, a queue pegpar could not safely consume.

    A missing file is fine (nothing to run yet) as long as its directory is
    writable: pops replace the file by renaming a temporary file next to it."""
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    if os.path.isdir(real):
        raise UserError("is a directory, not a queue file", where=path)
    if os.path.exists(real):
        mode = os.stat(real).st_mode
        # os.access() grants root everything: a file nobody may write (chmod 400)
        # was made read-only on purpose, and pegpar must not rewrite it either
        if not os.access(real, os.R_OK | os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise UserError("the queue file is not readable and writable: pegpar removes entries as it runs them",
                            where=path, hint=f"chmod u+rw {path}")
        check_not_shared(path, "the queue file", allow_shared)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"directory {folder} is not writable: pegpar replaces the queue file there "
                        "and keeps its lock and consumed.yaml beside it", where=path)


def check_not_shared(path: str, what: str, allow_shared: bool = False) -> None:
    """Refuse a queue or hosts file that group or others may write: whoever can
    write it can run commands on every node (a hosts file's parameters are
    rendered into commands too)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing: nothing to refuse (readers report other problems)
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not allow_shared:
        raise _shared(path, what)


def _shared(path: str, what: str) -> UserError:
    return UserError(f"{what} is writable by group or others: anyone who can write it can run "
                     "commands on every node", where=path,
                     hint=f"fix with `chmod go-w {path}`, or pass --allow-shared-queue if that is intended")


def holder(path: str) -> str:
    """Who holds the lock, as its holder described itself (empty when unknown)."""
    try:
        with open(lock_path(path), "rb") as f:
            return f.read(1000).decode("utf-8", "replace").strip()
    except OSError:
        return ""


@contextmanager
def hold_lock(path: str, who: str, timeout: float = -1,
              notify: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold the queue lock, waiting for it (forever when timeout < 0).

    While held, the lock file names the holder so that a waiting `pegpar l` or
    `pegpar add` can say whom it waits for."""
    lock = filelock.FileLock(lock_path(path))
    started = time.monotonic()
    first_wait = _QUIET_WAIT if timeout < 0 else min(timeout, _QUIET_WAIT)
    try:
        lock.acquire(timeout=first_wait, poll_interval=0.01)
    except filelock.Timeout:
        by = holder(path) or "another pegpar process"
        remaining = -1.0 if timeout < 0 else timeout - (time.monotonic() - started)
        if timeout >= 0 and remaining <= 0:
            raise UserError(f"the queue is locked by {by}", where=path, hint="try again later") from None
        if notify:
            notify(f"waiting for the lock on {path} held by {by} ...")
        try:
            lock.acquire(timeout=remaining)
        except filelock.Timeout:
            raise UserError(f"the queue is still locked by {by}", where=path, hint="try again later") from None
    except OSError as err:
        raise UserError(f"cannot lock the queue: {err.strerror}", where=lock_path(path)) from None
    try:
        _describe_holder(lock_path(path), f"{who} (pid {os.getpid()} on {socket.gethostname()}, "
                                          f"since {time.strftime('%H:%M:%S')})")
        yield
    finally:
        _describe_holder(lock_path(path), "")
        lock.release()


def _describe_holder(lock_file: str, text: str) -> None:
    try:
        with open(lock_file, "r+b") as f:
            f.truncate()
            f.write(text.encode())
    except OSError:
        pass  # only a courtesy for waiters


class QueueFile:
    """queue.yaml as a queue. The lock is `<queue>.lock` (filelock, an OS lock),
    shared with `pegpar l` and `pegpar add`. consumed.yaml sits beside queue.yaml.

    `notify` receives the "waiting for the lock" message of `add`.
    File-level problems found by `take` (a file that is not a block list, an
    unreadable or unwritable file) are returned like a head entry's error."""

    def __init__(self, path: str, consumed_path: Optional[str] = None, *,
                 notify: Optional[Callable[[str], None]] = None, allow_shared: bool = False):
        self.path = path
        self.consumed_path = consumed_path or os.path.join(os.path.dirname(path), CONSUMED_FILE)
        self.notify = notify
        self.allow_shared = allow_shared  # else take() refuses a file group or others may write
        self._lock = filelock.FileLock(lock_path(path))

    def take(self, n: int, accept: Callable[[Job], None], on_commit: Optional[Callable[[Pending], None]] = None,
             on_abandon: Optional[Callable[[], None]] = None) -> Optional[Tuple[List[Job], Optional[UserError]]]:
        """Take up to n jobs from the head, in order, in one locked transaction.

        Returns None, doing nothing, when the lock is held by someone else
        (never blocks). For each candidate job, `accept(job)` is called first; it
        raises UserError when the job cannot run (e.g. rendering fails): taking
        stops there, that entry stays in the file, and the error is returned
        beside the jobs taken before it. A parse error of the head entry is
        returned the same way. The jobs taken are appended to consumed.yaml
        (canonical form, fsync) and then the queue file is atomically replaced
        with the taken entries' text removed (a parametrized entry's remaining
        combinations written back in its place as compact products); every
        other byte of the file is unchanged. Reads only as much YAML as the
        head entries need. `on_commit(pending)` runs once the new queue file is
        on disk, right before consumed.yaml is appended to (the controller
        journals the jobs there: a crash before it leaves them queued and
        unjournaled, and consumed.yaml as it was). `pending.file` names the new
        file until it replaces the old one: after a crash in between, it still
        exists, and tells that the jobs never left the queue file (`unconsume`
        then takes them out of consumed.yaml again if they got there).

        Only the returned jobs are taken. A job accept()ed but not returned
        stays in the queue: that happens when the transaction fails (an I/O
        error, returned as UserError) or when the file was rewritten behind the
        lock's back while it ran (returns None, as for a held lock). When that
        is seen after on_commit (an editor saved meanwhile), consumed.yaml is
        cut back and `on_abandon()` runs while the new file still exists (the
        controller journals that the jobs were not taken after all)."""
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        except OSError as err:
            return [], UserError(f"cannot lock the queue: {err.strerror}", where=lock_path(self.path))
        try:
            return self._take_locked(n, accept, on_commit, on_abandon)
        except OSError as err:
            return [], UserError(f"cannot update the queue: {err.strerror}", where=err.filename or self.path)
        finally:
            self._lock.release()

    def is_empty(self) -> bool:
        """True when the file has no entry (cheap; missing file counts as empty)
        and nobody holds the lock: a `pegpar l` or `pegpar add` in progress may
        be adding entries, so a run must not end under it."""
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        except OSError:
            pass  # take() reports what is wrong with the lock
        else:
            self._lock.release()
        try:
            with open(os.path.realpath(self.path), "rb") as f:
                return _Scanner(f, self.path).head() is None
        except FileNotFoundError:
            return True
        except (OSError, UserError):
            return False  # something is there; take() reports what is wrong with it

    def notes(self, prefix: str) -> List[str]:
        """The rest of every comment line `# PREFIX...` in the file (reads all of it)."""
        try:
            with open(os.path.realpath(self.path), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        head = "# " + prefix
        return [line[len(head):] for line in lines if line.startswith(head)]

    def mtime(self) -> float:
        """When the file last changed, its permissions included (its ctime;
        0.0 when missing), for change detection."""
        try:
            return os.stat(os.path.realpath(self.path)).st_ctime
        except OSError:
            return 0.0

    def add(self, items: List[Union[str, Any]], front: bool = False, timeout: float = -1,
            note: Optional[str] = None) -> None:
        """Append (or prepend) canonical YAML objects under the lock (waits for it).

        Items are validated first (nothing is written when one is invalid) and
        written in canonical form. `front` puts them before the first entry,
        after the file's leading comments and `---`. `note`: a one-line comment
        written just before them."""
        entries = [spec.queue_entry_from_object(obj, Source("added entries", i + 1)) for i, obj in enumerate(items)]
        _check_templates(entries)
        objs = [expand.canonical_entry(entry.dims, entry.plain) for entry in entries]
        if not objs:
            return
        text = _items_text(objs)
        if note is not None:
            text = b"# " + note.replace("\n", " ").encode() + b"\n" + text
        with hold_lock(self.path, "pegpar add", timeout, self.notify):
            self._add_locked(text, front)

    def _take_locked(self, n: int, accept: Callable[[Job], None], on_commit: Optional[Callable[[Pending], None]],
                     on_abandon: Optional[Callable[[], None]]) -> Optional[Tuple[List[Job], Optional[UserError]]]:
        real = os.path.realpath(self.path)
        try:
            src = open(real, "rb")
        except FileNotFoundError:
            return [], None
        with src:
            before = os.fstat(src.fileno())
            if before.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not self.allow_shared:
                return [], _shared(self.path, "the queue file")  # made so during the run
            scanner = _Scanner(src, self.path)
            taken: List[Job] = []
            cuts: List[_Cut] = []
            error: Optional[UserError] = None
            try:
                line = scanner.head()
                while line is not None and len(taken) < n:
                    item = scanner.item(line)
                    line = scanner.following
                    entry = _parse_item(item, self.path)
                    jobs, rest, error = _take_from(entry, n - len(taken), accept)
                    taken += jobs
                    if jobs:
                        cuts.append(_cut_for(item, rest, entry.plain))
                    if error or rest:
                        break
            except UserError as err:
                error = err
            if not taken:
                return [], error
            consumed = _items_text([job.canonical() for job in taken])

            def commit(new_file: str) -> bool:
                if _changed(before, real):
                    return False  # written behind the lock's back: leave both files alone
                pending: List[Pending] = []

                def journal(start: int, end: int) -> None:
                    pending.append(Pending(new_file, os.path.abspath(self.consumed_path), start, end))
                    if on_commit is not None:
                        on_commit(pending[0])

                # The jobs are journalled before consumed.yaml gets them: a crash in
                # between leaves a record naming bytes recovery may have to cut, never
                # bytes no record names. A new consumed.yaml is as private as the queue.
                _append_durably(self.consumed_path, consumed, stat.S_IMODE(before.st_mode) & 0o666, journal)
                if _changed(before, real):  # saved by an editor while the jobs were journalled
                    unconsume(pending[0].consumed, pending[0].start, pending[0].end)
                    if on_abandon is not None:
                        on_abandon()
                    return False
                return True

            if not _replace(real, src, cuts, commit):
                return None
        return taken, error

    def _add_locked(self, text: bytes, front: bool) -> None:
        real = os.path.realpath(self.path)
        try:
            src = open(real, "rb")
        except FileNotFoundError:
            _create(real, text)
            return
        with src:
            if src.readline().endswith(b"\r\n"):  # the file's line ends, as pops keep them
                text = text.replace(b"\n", b"\r\n")
            src.seek(0)
            scanner = _Scanner(src, self.path)
            first = scanner.head()
            end = os.fstat(src.fileno()).st_size
            marker = scanner.empty_marker
            if marker is not None:  # `[]` (or `--- []`) goes; `---` and a comment on its line stay
                kept = b"---\n" if marker.data.lstrip(_BOM).startswith(b"---") else b""
                if b"#" in marker.data:
                    kept += b"#" + marker.data.split(b"#", 1)[1].rstrip(b"\r\n") + b"\n"
                if text.endswith(b"\r\n"):
                    kept = kept.replace(b"\n", b"\r\n")
                cut = _Cut(marker.offset, marker.offset + marker.size, kept + text)
            elif front and first is not None:
                at = first.offset + (len(_BOM) if first.number == 1 and first.data.startswith(_BOM) else 0)
                cut = _Cut(at, at, text)
            else:
                at = _document_end(src, end)
                cut = _Cut(at, at, (b"" if _ends_line(src, at) else b"\n") + text)
            _replace(real, src, [cut], lambda _: True)


@dataclass(frozen=True)
class Pending:
    """A pop about to replace the queue file: `file` is the new queue file (it
    exists until it replaces the old one), and the bytes [start, end) of
    consumed.yaml (`consumed`, an absolute path) are about to be appended for
    its jobs."""

    file: str
    consumed: str
    start: int
    end: int


def unconsume(consumed: str, start: int, end: int) -> bool:
    """Take a pop's jobs out of consumed.yaml again when that pop never replaced
    the queue file (they are still queued, and will be consumed again): cut the
    file back to `start`, only if it still ends at `end` (nothing was appended
    since; a crash before the append left nothing to cut). True when it was cut."""
    try:
        fd = os.open(consumed, os.O_WRONLY)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != end or not 0 <= start < end:
            return False
        os.ftruncate(fd, start)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Line:
    offset: int
    number: int  # 1-based
    data: bytes  # the line, or its first MAX_ENTRY_BYTES + 1 bytes
    size: int  # its full length in the file


@dataclass(frozen=True)
class _Item:
    """One top-level list item: [start, end) is its text up to its last line of
    content, [end, blank_end) the blank lines right after it."""

    start: int
    end: int
    blank_end: int
    line: int
    text: bytes  # [start, blank_end): trailing blank lines can belong to a `|+` scalar


@dataclass(frozen=True)
class _Cut:
    """Replace file bytes [start, stop) with `text`."""

    start: int
    stop: int
    text: bytes


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


class _Scanner:
    """Reads a queue file line by line, holding at most one entry in memory."""

    def __init__(self, f: IO[bytes], path: str):
        self._f = f
        self._path = path
        self._offset = 0
        self._number = 0
        self.empty_marker: Optional[_Line] = None
        self.following: Optional[_Line] = None  # first line of the item after the last one read

    def _next(self) -> Optional[_Line]:
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
        return _Line(offset, self._number, data, size)

    def head(self) -> Optional[_Line]:
        """Skip the file's header; the first line of the first item, or None."""
        while True:
            line = self._next()
            if line is None:
                return None
            data = line.data[len(_BOM):] if line.number == 1 and line.data.startswith(_BOM) else line.data
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

    def item(self, first: _Line) -> _Item:
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
        return _Item(first.offset, end, blank_end, first.number, text)


def _parse_item(item: _Item, path: str) -> QueueEntry:
    where = f"{path}:{item.line}"
    try:
        text = item.text.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise UserError("entry is not valid UTF-8 text", where=where) from None
    entries = spec.parse_queue(text, path, first_line=item.line)
    if len(entries) != 1:
        raise UserError("expected one queue entry here", where=where)
    return entries[0]


def _take_from(entry: QueueEntry, k: int, accept: Callable[[Job], None]
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


def _cut_for(item: _Item, rest: Sequence[Params], plain: bool) -> _Cut:
    """The edit for a taken item: gone with its trailing blank lines, or its
    text replaced by the remaining products (the blank lines stay)."""
    start = item.start + (len(_BOM) if item.start == 0 and item.text.startswith(_BOM) else 0)  # the file's
    if not rest:
        return _Cut(start, item.blank_end, b"")
    text = _items_text([expand.canonical_entry(p, plain) for p in rest])
    if item.text.split(b"\n", 1)[0].endswith(b"\r"):
        text = text.replace(b"\n", b"\r\n")
    blanks = item.text[item.end - item.start:]
    if blanks and yaml.load(text + blanks, Loader=_Loader) != yaml.load(text, Loader=_Loader):
        return _Cut(start, item.blank_end, text)  # a `|+` scalar would swallow the blank lines
    return _Cut(start, item.end, text)


def _items_text(objs: List[Union[str, dict]]) -> bytes:
    """Canonical list items to splice into a file. PyYAML ends a stream whose
    last scalar keeps its trailing newlines (`|+`) with a `...` document end,
    which in the middle of a file would start a second document: drop it (the
    next item, at column 0, ends the scalar just as well)."""
    text = expand.dump_yaml_items(objs)
    if text.endswith("\n...\n"):
        text = text[:-len("...\n")]
    return text.encode()


def _document_end(f: IO[bytes], end: int) -> int:
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


def _ends_line(f: IO[bytes], offset: int) -> bool:
    if offset == 0:
        return True
    f.seek(offset - 1)
    return f.read(1) == b"\n"


def _splice(src: IO[bytes], out: IO[bytes], cuts: Sequence[_Cut]) -> None:
    """Copy src to out with the cuts applied (cuts in file order), streaming."""
    pos = 0
    for cut in cuts:
        src.seek(pos)
        _copy(src, out, cut.start - pos)
        out.write(cut.text)
        pos = cut.stop
    src.seek(pos)
    if not _copy_in_kernel(src, out, pos):
        _copy(src, out, -1)


def _copy_in_kernel(src: IO[bytes], out: IO[bytes], pos: int) -> bool:
    """Copy the rest of src from `pos` inside the kernel (a long queue's tail
    never passes through pegpar); False where that is not possible."""
    if not hasattr(os, "copy_file_range"):
        return False
    out.flush()
    copied = 0
    try:
        while True:
            n = os.copy_file_range(src.fileno(), out.fileno(), 1 << 30, pos + copied)
            if n == 0:
                return True
            copied += n
    except OSError:
        if copied:
            raise  # part of it is written: do not write it twice
        return False


def _copy(src: IO[bytes], out: IO[bytes], size: int) -> None:
    while size:
        block = src.read(1 << 20 if size < 0 else min(size, 1 << 20))
        if not block:
            return
        out.write(block)
        size -= len(block) if size > 0 else 0


def _replace(real: str, src: IO[bytes], cuts: Sequence[_Cut], commit: Callable[[str], bool]) -> bool:
    """Atomically replace `real` with src spliced by cuts, keeping its permission
    bits. `commit(temporary name)` runs once the new file is on disk, just
    before the rename; it returns False to abandon the replacement."""
    mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)

    def fill(out: IO[bytes]) -> None:
        _splice(src, out, cuts)

    return _write_atomically(real, fill, mode, commit)


def new_file_mode() -> int:
    """Permission bits for a queue file pegpar creates: the umask's, never
    writable by group or others (see check_queue_file)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask & ~0o022


def _create(real: str, text: bytes) -> None:
    _write_atomically(real, lambda out: out.write(text), new_file_mode(), lambda _: True)


def _write_atomically(real: str, fill: Callable[[IO[bytes]], Any], mode: int,
                      commit: Callable[[str], bool]) -> bool:
    folder, name = os.path.split(real)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        if not commit(tmp):
            os.unlink(tmp)
            return False
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return True


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _changed(before: os.stat_result, real: str) -> bool:
    try:
        now = os.stat(real)
    except OSError:
        return True
    return (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns)


def _append_durably(path: str, data: bytes, mode: int = 0o644,
                    before: Optional[Callable[[int, int], Any]] = None) -> None:
    """Append whole lines and fsync. `mode`: the permission bits of a file
    created here. `before(start, end)` runs before anything is written, with
    the range of the file the data will take."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        if before is not None:
            before(size, size + len(data))
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def check_text(data: bytes, path: str) -> Tuple[QueueEntry, ...]:
    """Validate a whole queue text as pops will read it: valid entries (errors
    name path:LINE) and a layout that cuts into one entry per `- ` item."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError("not valid UTF-8 text", where=f"{path}:{line}") from None
    entries = spec.parse_queue(text.lstrip("\ufeff"), path)
    _check_templates(entries)
    scanner = _Scanner(io.BytesIO(data), path)
    line = scanner.head()
    count = 0
    while line is not None:
        item = scanner.item(line)
        line = scanner.following
        try:
            _parse_item(item, path)
        except UserError as err:
            raise UserError(err.message, where=err.where,
                            hint="pegpar reads the queue one `- ` item at a time: indent every line of an entry "
                            "after its first, and do not share anchors between entries") from None
        count += 1
    if count != len(entries):
        raise UserError(f"found {count} entries starting with `- ` at column 0 but the file holds {len(entries)}",
                        where=path, hint="start each entry with `- ` at column 0")
    return entries


def _check_templates(entries: Sequence[QueueEntry]) -> None:
    """Template syntax errors, which a pop would stop at (variables are the
    sub-nodes' business, checked when a job is placed)."""
    from pegpar import template

    for entry in entries:
        for command in entry.commands:
            template.check_syntax(command, entry.source)
