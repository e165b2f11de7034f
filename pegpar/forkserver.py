"""The GNU parallel that compiles once: each wave's parallel is forked from it.

GNU parallel is 15,000 lines of perl, compiled anew by every `perl parallel`:
at 64 hosts that is 64 compilations while the fleet fills, and 64 copies of
the compiled script (about 14 MB each). The fork server (perl/PegparForkServer.pm)
compiles the script once; a parallel forked from it starts without compiling
and shares the compiled pages with the others (about 3 MB each of its own).

A forked parallel is not pegpar's child: `Forked` watches it through two
files the server keeps, its wait status (`.exit`, which wakes the
controller's watch) and its pid file (`.pid`), locked for as long as it
lives, also by a controller started after a crash.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from pegpar import proc

_PERL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "perl")


class Server:
    """One fork server for one compiled script, in this process."""

    def __init__(self, script: str):
        self.owner = os.getpid()
        self.forked = False  # a parallel of its own runs or ran: pegpar waits for it at the end
        self._err = tempfile.TemporaryFile()
        self.process = proc.spawn(["perl", "-I", _PERL, "-MPegparForkServer", script],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)

    def fork(self, fields: List[str]) -> int:
        """One request (PegparForkServer.pm); the child's pid, 0 if none."""
        try:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(b"\t".join(percent_encoded(f) for f in fields) + b"\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except (OSError, ValueError):  # the server is gone (or was closed)
            return 0
        pid = int(answer) if answer.strip().isdigit() else 0
        self.forked = self.forked or pid > 0
        return pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def why(self) -> str:
        """The last line the server wrote on stderr (why it could not start)."""
        self._err.seek(0)
        lines = self._err.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "the fork server ended"

    def close(self) -> None:
        """End of input: the server exits; the parallels it forked go on."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass


_servers: Dict[str, Server] = {}


def server(script: str) -> Server:
    """This process's server for `script`, started on first use (again if it died)."""
    s = _servers.get(script)
    if s is None or s.owner != os.getpid() or not s.alive():
        s = _servers[script] = Server(script)
    return s


def prestart(script: str) -> None:
    """Start the server now: perl compiles the script (a tenth of a second
    of CPU) while pegpar reads its files and checks its hosts, instead of
    after. A missing perl is said by the first fork."""
    try:
        server(script)
    except OSError:
        pass


def _end_all() -> None:
    """At pegpar's exit: its servers end, and are waited for, so that the CPU
    of the parallels they ran counts as pegpar's (`time pegpar ...`). One
    that never forked (pegpar stopped on an error first) is killed: its
    compilation is not worth waiting for."""
    for s in _servers.values():
        if s.owner == os.getpid():
            if not s.forked and s.alive():
                s.process.kill()
            s.close()
            try:
                s.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                s.process.kill()
                s.process.wait()


atexit.register(_end_all)


class Forked:
    """A parallel forked by a server (None: by that of a controller that
    died), with the Popen calls a Wave uses."""

    def __init__(self, pid: int, stem: str, srv: Optional[Server], returncode: Optional[int] = None):
        self.pid = pid
        self.stem = stem
        self.server = srv
        self.returncode = returncode

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            status = _status(self.stem + ".exit")
            if status is not None:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif (self.server is None or not self.server.alive()) and running(self.stem + ".pid") is None:
                self.returncode = 255  # ended with no server to tell its status
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(["parallel"], timeout or 0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def start(script: str, args: List[str], *, env: Dict[str, str], stem: str) -> Tuple[Forked, Optional[int]]:
    """GNU parallel `script` with `args`, forked from the server: its input
    the returned pipe end (only pegpar writes it: if pegpar dies, parallel
    reads EOF), its stderr `stem.stderr`. On failure, a Forked that has
    ended, no pipe, and why in `stem.stderr`."""
    fifo = stem + ".in"
    os.mkfifo(fifo, 0o600)
    try:
        # open for reading and writing, which does not block: the server's
        # open for reading then does not block either
        hold = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        try:
            srv, pid, why = _fork(script, [os.getcwd(), fifo, stem + ".stderr", stem + ".pid", stem + ".exit",
                                           str(len(args))] + args + [f"{k}={v}" for k, v in env.items()])
            if pid <= 0:
                with open(stem + ".stderr", "w", encoding="utf-8") as f:
                    f.write(why + "\n")
                return Forked(0, stem, srv, returncode=127), None
            # the child reads the fifo already: this open does not block
            fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
        finally:
            os.close(hold)
    finally:
        os.unlink(fifo)
    return Forked(pid, stem, srv), fd


def _fork(script: str, fields: List[str]) -> Tuple[Optional[Server], int, str]:
    """(server, pid, why not): asked once more of a new server if the first
    one had just died."""
    srv: Optional[Server] = None
    try:
        for _ in range(2):
            srv = server(script)
            pid = srv.fork(fields)
            if pid > 0:
                return srv, pid, ""
            if srv.alive():
                break
    except OSError as e:  # no perl
        return srv, 0, f"perl: {e.strerror}"
    return srv, 0, srv.why() if srv is not None else ""


def running(pid_path: str) -> Optional[int]:
    """The pid of the forked parallel whose pid file this is, while it runs
    (its lock is held); None once it ended."""
    try:
        fd = os.open(pid_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(100):  # the server writes the pid just after the fork
                text = os.pread(fd, 32, 0).strip()
                if text.isdigit():
                    return int(text)
                time.sleep(0.01)
            return None
        return None
    finally:
        os.close(fd)


def _status(path: str) -> Optional[int]:
    try:
        with open(path, "rb") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.lstrip(b"-").isdigit() else None


def percent_encoded(text: str) -> bytes:
    """`text` as one field of a tab-separated line: `%`, tab and newline
    percent-encoded, which perl decodes back byte for byte with
    `s/%([0-9A-F]{2})/chr(hex($1))/ge` (here and in a wave's job line)."""
    raw = text.encode("utf-8", "surrogateescape")
    return raw.replace(b"%", b"%25").replace(b"\t", b"%09").replace(b"\n", b"%0A")
