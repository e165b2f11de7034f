"""Writes that survive a crash: a file replaced atomically (written aside,
fsynced, renamed, its directory fsynced), a streamed copy with some byte
ranges replaced (Cut), and an fsynced append of whole lines."""

from __future__ import annotations

import os
import queue
import stat
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, Sequence


@dataclass(frozen=True)
class Cut:
    """Replace file bytes [start, stop) with `text`."""

    start: int
    stop: int
    text: bytes


def _splice(src: IO[bytes], out: IO[bytes], cuts: Sequence[Cut]) -> None:
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


def replace(real: str, src: IO[bytes], cuts: Sequence[Cut], commit: Callable[[str], bool]) -> bool:
    """Atomically replace `real` with src spliced by cuts, keeping its permission
    bits. `commit(temporary name)` runs once the new file is on disk, just
    before the rename; it returns False to abandon the replacement."""
    mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)

    def fill(out: IO[bytes]) -> None:
        _splice(src, out, cuts)

    return write_atomically(real, fill, mode, commit)


def new_file_mode() -> int:
    """Permission bits for a queue file pegpar creates: the umask's, never
    writable by group or others (see check_queue_file)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask & ~0o022


def create(real: str, text: bytes) -> None:
    write_atomically(real, lambda out: out.write(text), new_file_mode(), lambda _: True)


def write_atomically(real: str, fill: Callable[[IO[bytes]], Any], mode: int,
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
    fsync_dir(folder)
    return True


_CLOSING: Optional["queue.SimpleQueue[IO[bytes]]"] = None


def close_aside(f: IO[bytes]) -> None:
    """Close a replaced file on a thread of its own: the last close of a file
    whose name is gone frees its inode and blocks, which waits for the
    filesystem's journal when it is busy (a pop's fsyncs keep it so). Nothing
    depends on when it happens: no path leads to the file any more."""
    global _CLOSING
    if _CLOSING is None:
        _CLOSING = queue.SimpleQueue()
        threading.Thread(target=_closer, args=(_CLOSING,), name="pegpar-close", daemon=True).start()
    _CLOSING.put(f)


def _closer(files: "queue.SimpleQueue[IO[bytes]]") -> None:
    while True:
        try:
            files.get().close()
        except OSError:
            pass  # read-only: nothing was written through it


def fsync_dir(folder: str) -> None:
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


def changed(before: os.stat_result, real: str) -> bool:
    try:
        now = os.stat(real)
    except OSError:
        return True
    return (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns)


def append_durably(path: str, data: bytes, mode: int = 0o644,
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
