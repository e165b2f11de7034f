"""Which files of a few folders changed since the last look (Linux inotify).

The controller's loop reads a job's output, and a wave's joblog and `.done`
file, only when the file changed: with hundreds of jobs running, a turn
costs one read of the inotify descriptor instead of a read of every file,
and between turns it waits on that descriptor (and on `wake`, which signal
handlers call). Where it cannot tell (no inotify, its queue overflowed, the first look),
`changed` says None and the caller reads everything, as without it.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from typing import Dict, Optional, Sequence, Set

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x2, 0x8, 0x80, 0x100, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
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


class Watch:
    def __init__(self, folders: Sequence[str]):
        self._fd: Optional[int] = None
        self._folders: Dict[int, str] = {}
        self._first = True
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
        paths: Optional[Set[str]] = set()
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            got = parse_events(data, self._folders)
            paths = None if got is None or paths is None else paths | got
        if self._first:
            self._first = False
            return None
        return paths

    def wait(self, timeout: float) -> bool:
        """Until a watched file changes or `wake` is called, at most `timeout`
        seconds; False without inotify (nothing waited)."""
        if self._fd is None or self._wake_r < 0:
            return False
        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return True

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
