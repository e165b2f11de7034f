"""Which files of a few folders changed since the last look (Linux inotify).

The controller's loop reads a job's output, and a wave's joblog and `.done`
file, only when the file changed: with hundreds of jobs running, a turn
costs one read of the inotify descriptor instead of a read of every file,
and between turns it waits on that descriptor (and on `wake`, which signal
handlers call). A change that frees a sub-node (an *urgent* file: a job's
end report, a wave's joblog or exit) ends the wait at once; output alone
ends it no sooner than a given time, so that jobs that print a lot cost a
few turns a second, not one a line. Where it cannot tell (no inotify, its
queue overflowed, the first look), `changed` says None and the caller reads
everything, as without it.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from typing import Dict, Optional, Sequence, Set

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x2, 0x8, 0x80, 0x100, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
POLL = 0.005  # seconds between looks for an urgent change while output alone came
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows


def parse_events(data: bytes, folders: Dict[int, str]) -> Optional[Set[str]]:
    """The paths named by a buffer of inotify events; None on an overflow."""
    paths: Set[str] = set()
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _, length = _EVENT.unpack_from(data, offset)
        name = data[offset + _EVENT.size:offset + _EVENT.size + length].split(b"\0", 1)[0]
        offset += _EVENT.size + length
        if mask & IN_Q_OVERFLOW:
            return None
        if wd in folders and name:
            paths.add(os.path.join(folders[wd], os.fsdecode(name)))
    return paths


def _union(a: Optional[Set[str]], b: Optional[Set[str]]) -> Optional[Set[str]]:
    """`a` with `b` added (in place: `a` grows with every look); None: unknown."""
    if a is None or b is None:
        return None
    a |= b
    return a


class Watch:
    def __init__(self, folders: Sequence[str], urgent: Sequence[str] = ()):
        self._fd: Optional[int] = None
        self._folders: Dict[int, str] = {}
        self._first = True
        self._urgent = tuple(urgent)  # name endings of the files whose change ends a wait at once
        self._read: Optional[Set[str]] = set()  # what `wait` read, for the next `changed`
        # `wake` (from a signal handler: a child exited, Ctrl-C) ends a `wait` at once
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):  # not Linux
            return
        if fd < 0:  # out of inotify instances: read everything
            return
        for folder in folders:
            wd = libc.inotify_add_watch(fd, os.fsencode(folder), MASK)
            if wd < 0:
                os.close(fd)
                return
            self._folders[wd] = folder
        self._fd = fd

    def changed(self) -> Optional[Set[str]]:
        """Paths written, created or moved in since the last call; None: unknown."""
        if self._fd is None:
            return None
        paths, self._read = _union(self._read, self._drain()), set()
        if self._first:
            self._first = False
            return None
        return paths

    def _drain(self) -> Optional[Set[str]]:
        """The paths of the events waiting on the descriptor; None on an overflow."""
        paths: Optional[Set[str]] = set()
        while True:
            try:
                data = os.read(self._fd, 1 << 16)  # type: ignore[arg-type]
            except BlockingIOError:
                break
            if not data:
                break
            paths = _union(paths, parse_events(data, self._folders))
        return paths

    def wait(self, timeout: float, settle: float = 0.0) -> bool:
        """Until an urgent file changes or `wake` is called, at most `timeout`
        seconds; other changes end it after at least `settle` seconds (looked
        at every POLL seconds meanwhile, for an urgent one). False without
        inotify (nothing waited)."""
        if self._fd is None or self._wake_r < 0:
            return False
        now = time.monotonic()
        deadline, settled = now + timeout, now + min(settle, timeout)
        while now < deadline:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], deadline - now)
            if self._wake_r in ready:
                self._take_wakes()
                break
            if not ready:
                break
            got = self._drain()
            self._read = _union(self._read, got)
            if got is None or any(p.endswith(self._urgent) for p in got):
                break
            deadline = min(deadline, settled)  # output alone: no later than `settle`, no sooner
            now = time.monotonic()
            if now < deadline and select.select([self._wake_r], [], [], min(POLL, deadline - now))[0]:
                self._take_wakes()
                break
            now = time.monotonic()
        return True

    def _take_wakes(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (a wake is pending anyway) or closed
            pass

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._fd, self._wake_r, self._wake_w = None, -1, -1
