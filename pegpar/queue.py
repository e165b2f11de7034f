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

The lock is `queue.lock` in the queue's state directory (Pegasus would take a
`queue.yaml.lock` next to the queue for a lock held forever), an OS lock
(filelock), so a killed holder leaves nothing that holds it. `take` never waits for it; `add` and `pegpar l` do.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import filelock

from pegpar import aliases, durable, expand, queuetext, spec
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job
from pegpar.spec import Source

CONSUMED_FILE = "consumed.yaml"
BACKFILL_WINDOW = 100  # entries a take may pass over because their next job waits (--backfill)
REJECTED_SUFFIX = ".rejected"
# A lock held longer than this is worth telling the waiting user about; a pop
# holds it for milliseconds.
_QUIET_WAIT = 0.5



def lock_path(path: str) -> str:
    """The queue's lock file, in its state directory: next to the queue,
    Pegasus would read `queue.yaml.lock` as a lock held forever."""
    from pegpar.state import state_dir_for

    return os.path.join(state_dir_for(path), "queue.lock")


def _file_lock(path: str) -> filelock.FileLock:
    folder = os.path.dirname(lock_path(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        pass  # acquiring reports it
    return filelock.FileLock(lock_path(path), mode=0o600)


def forget_old_lock(path: str) -> None:
    """Remove a `QUEUE.lock` that earlier versions of pegpar left next to the
    queue, when no one holds it (Pegasus reads its existence as a lock held
    forever)."""
    old = os.path.realpath(path) + ".lock"
    if not os.path.exists(old):
        return
    lock = filelock.FileLock(old)
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return
    try:
        os.unlink(old)
    except OSError:
        pass
    finally:
        lock.release()


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
    rendered into commands too). Group write is fine when the group is the
    owner's private one (see shared)."""
    try:
        st = os.stat(path)
    except OSError:
        return  # missing: nothing to refuse (readers report other problems)
    if shared(st) and not allow_shared:
        raise _shared(path, what)


def shared(st: os.stat_result) -> bool:
    """Whether others than the file's owner may write it. As Debian's OpenSSH
    decides for its files: world-writable is shared; group-writable is not
    when the group's one member is the owner (a user-private group, as umask
    002 systems give every user), counting users whose primary group it is
    and its listed members."""
    if st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _private_group(st.st_gid, st.st_uid)


@functools.lru_cache(maxsize=16)
def _private_group(gid: int, uid: int) -> bool:
    """Whether the group's one member is the user (asked once per run: a pop
    checks the queue file's mode every time, and the user list can be long)."""
    import grp
    import pwd

    try:
        group = grp.getgrgid(gid)
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    members = {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid} | set(group.gr_mem)
    return members == {owner}


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
    lock = _file_lock(path)
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
    """queue.yaml as a queue. The lock is `queue.lock` in the state directory
    (filelock, an OS lock), shared with `pegpar l` and `pegpar add`. consumed.yaml sits beside queue.yaml.

    `notify` receives the "waiting for the lock" message of `add`.
    File-level problems found by `take` (a file that is not a block list, an
    unreadable or unwritable file) are returned like a head entry's error."""

    def __init__(self, path: str, consumed_path: Optional[str] = None, *,
                 notify: Optional[Callable[[str], None]] = None, allow_shared: bool = False):
        self.path = path
        self.consumed_path = consumed_path or os.path.join(os.path.dirname(path), CONSUMED_FILE)
        self.notify = notify
        self.allow_shared = allow_shared  # else take() refuses a file group or others may write
        self._lock = _file_lock(path)

    def take(self, n: int, accept: Callable[[Job], None], on_commit: Optional[Callable[[Pending], None]] = None,
             on_abandon: Optional[Callable[[], None]] = None,
             skip_waiting: bool = False) -> Optional[Tuple[List[Job], Optional[UserError]]]:
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
        controller journals that the jobs were not taken after all).

        `skip_waiting` (--backfill): an entry whose next job waits for a busy
        sub-node (accept raises NotYet) is passed over, and taking goes on
        with the entries after it, up to BACKFILL_WINDOW entries passed over;
        the first NotYet is returned as the error."""
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        except OSError as err:
            return [], UserError(f"cannot lock the queue: {err.strerror}", where=lock_path(self.path))
        try:
            return self._take_locked(n, accept, on_commit, on_abandon, skip_waiting)
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
                return queuetext.Scanner(f, self.path).head() is None
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
        queuetext.check_templates(entries)
        objs = [expand.canonical_entry(entry.dims, entry.plain) for entry in entries]
        if not objs:
            return
        text = queuetext.items_text(objs)
        if note is not None:
            text = b"# " + note.replace("\n", " ").encode() + b"\n" + text
        with hold_lock(self.path, "pegpar add", timeout, self.notify):
            self._add_locked(text, front)

    def _take_locked(self, n: int, accept: Callable[[Job], None], on_commit: Optional[Callable[[Pending], None]],
                     on_abandon: Optional[Callable[[], None]],
                     skip_waiting: bool) -> Optional[Tuple[List[Job], Optional[UserError]]]:
        real = os.path.realpath(self.path)
        try:
            src = open(real, "rb")
        except FileNotFoundError:
            return [], None
        replaced = False
        try:
            before = os.fstat(src.fileno())
            if shared(before) and not self.allow_shared:
                return [], _shared(self.path, "the queue file")  # made so during the run
            if queuetext.flow_list(src):
                # `[a, b]`, as Pegasus reads it: written out once in block style, one
                # entry a `- ` line (its comments go), then taken from as usual
                try:
                    entries = spec.parse_queue(src.read().decode("utf-8").lstrip("\ufeff"), self.path)
                except UserError as err:
                    return [], err  # it stays as the user wrote it
                except UnicodeDecodeError:
                    src.seek(0)  # the scan below says what is wrong, as for any file
                else:
                    text = queuetext.items_text([expand.canonical_entry(e.dims, e.plain) for e in entries])
                    if not durable.write_atomically(real, lambda out: out.write(text), stat.S_IMODE(before.st_mode),
                                                    lambda _: not durable.changed(before, real)):
                        return None  # saved behind the lock's back meanwhile: the next turn looks again
                    return self._take_locked(n, accept, on_commit, on_abandon, skip_waiting)
            scanner = queuetext.Scanner(src, self.path)
            taken: List[Job] = []
            cuts: List[durable.Cut] = []
            anchors = spec.Anchors()
            anchored: List[Tuple[durable.Cut, List[Tuple[str, Any]]]] = []
            error: Optional[UserError] = None
            skipped = 0
            try:
                line = scanner.head()
                while line is not None and len(taken) < n:
                    item = scanner.item(line)
                    line = scanner.following
                    entry = queuetext.parse_item(item, self.path, anchors)
                    jobs, rest, stop = queuetext.take_from(entry, n - len(taken), accept)
                    taken += jobs
                    error = error or stop
                    if jobs:
                        cuts.append(queuetext.cut_for(item, rest, entry.plain))
                        if anchors.defined:
                            anchored.append((cuts[-1], [(a, anchors.nodes[a]) for a in anchors.defined]))
                    if isinstance(stop, NotYet) and skip_waiting and skipped + 1 < BACKFILL_WINDOW:
                        skipped += 1
                        continue
                    if stop or rest:
                        break
            except UserError as err:
                error = error or err
            if not taken:
                return [], error
            cuts = sorted(cuts + aliases.moves(src, cuts, anchored), key=lambda c: c.start)
            consumed = queuetext.items_text([job.canonical() for job in taken])

            def commit(new_file: str) -> bool:
                if durable.changed(before, real):
                    return False  # written behind the lock's back: leave both files alone
                pending: List[Pending] = []

                def journal(start: int, end: int) -> None:
                    pending.append(Pending(new_file, os.path.abspath(self.consumed_path), start, end))
                    if on_commit is not None:
                        on_commit(pending[0])

                # The jobs are journalled before consumed.yaml gets them: a crash in
                # between leaves a record naming bytes recovery may have to cut, never
                # bytes no record names. A new consumed.yaml is as private as the queue.
                durable.append_durably(self.consumed_path, consumed, stat.S_IMODE(before.st_mode) & 0o666, journal)
                if durable.changed(before, real):  # saved by an editor while the jobs were journalled
                    unconsume(pending[0].consumed, pending[0].start, pending[0].end)
                    if on_abandon is not None:
                        on_abandon()
                    return False
                return True

            if not durable.replace(real, src, cuts, commit):
                return None
            replaced = True
        finally:
            if replaced:
                durable.close_aside(src)  # the old file's last close frees its blocks
            else:
                src.close()
        return taken, error

    def _add_locked(self, text: bytes, front: bool) -> None:
        real = os.path.realpath(self.path)
        try:
            src = open(real, "rb")
        except FileNotFoundError:
            durable.create(real, text)
            return
        with src:
            if src.readline().endswith(b"\r\n"):  # the file's line ends, as pops keep them
                text = text.replace(b"\n", b"\r\n")
            src.seek(0)
            scanner = queuetext.Scanner(src, self.path)
            first = scanner.head()
            end = os.fstat(src.fileno()).st_size
            marker = scanner.empty_marker
            if marker is not None:  # `[]` (or `--- []`) goes; `---` and a comment on its line stay
                kept = b"---\n" if marker.data.lstrip(queuetext.BOM).startswith(b"---") else b""
                if b"#" in marker.data:
                    kept += b"#" + marker.data.split(b"#", 1)[1].rstrip(b"\r\n") + b"\n"
                if text.endswith(b"\r\n"):
                    kept = kept.replace(b"\n", b"\r\n")
                cut = durable.Cut(marker.offset, marker.offset + marker.size, kept + text)
            elif front and first is not None:
                bom = first.number == 1 and first.data.startswith(queuetext.BOM)
                at = first.offset + (len(queuetext.BOM) if bom else 0)
                cut = durable.Cut(at, at, text)
            else:
                at = queuetext.document_end(src, end)
                cut = durable.Cut(at, at, (b"" if queuetext.ends_line(src, at) else b"\n") + text)
            durable.replace(real, src, [cut], lambda _: True)


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


