"""Running pegpar as a child process in end-to-end tests, and reading what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import joblog  # noqa: E402
from pegpar.state import StateDir  # noqa: E402

HANG_GUARD = 120  # seconds: a hung pegpar fails the test instead of the suite


def pegpar(args: List[str], cwd, env: Dict[str, str], input: Optional[str] = None,
           timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pegpar"] + args, cwd=str(cwd), env=env,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def start(args: List[str], cwd, env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pegpar"] + args, cwd=str(cwd), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def children(pid: int) -> List[Tuple[int, List[bytes]]]:
    """pid's children: (pid, argv)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            if stat[stat.rfind(")") + 2:].split()[1] == str(pid):
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    found.append((int(name), f.read().split(b"\0")))
        except (OSError, IndexError):
            continue
    return found


def records(cwd) -> List[joblog.Record]:
    return joblog.read(os.path.join(str(cwd), ".pegpar", "joblog"))


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    """Until `predicate()` holds; it is asked at least once, even when the
    time left is already spent (a deadline counted from an earlier moment)."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cluster_hosts(tmp_path, hosts_yaml: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(hosts_yaml)
    path.chmod(0o600)


def write_queue(tmp_path, text: str) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    path.chmod(0o600)


def load_yaml(path) -> object:
    with open(path) as f:
        return yaml.safe_load(f)


def overlapping(a: joblog.Record, b: joblog.Record) -> bool:
    return a.start < b.start + b.runtime and b.start < a.start + a.runtime


class Child:
    """A pegpar child whose stdout and stderr are collected as they come: a
    test can wait for a message, and a full pipe never blocks pegpar."""

    def __init__(self, args: List[str], cwd, env: Dict[str, str]):
        self.p = start(args, cwd, env)
        self.out: List[str] = []
        self.err: List[str] = []
        self._readers = [threading.Thread(target=_drain, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.p.pid

    def stdout(self) -> str:
        return "".join(self.out)

    def stderr(self) -> str:
        return "".join(self.err)

    def running(self) -> bool:
        return self.p.poll() is None

    def wait(self, timeout: float = HANG_GUARD) -> int:
        code = self.p.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def end(self) -> None:
        """After a failed test: let pegpar kill its jobs (SIGTERM), then make sure."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def _drain(stream, lines: List[str]) -> None:
    for line in stream:
        lines.append(line)


def journal(folder) -> List[dict]:
    return StateDir(os.path.join(str(folder), ".pegpar")).journal()


def dispatched(folder, node: Optional[str] = None) -> List[dict]:
    return [r for r in journal(folder) if r.get("event") == "dispatch" and node in (None, r.get("node"))]


def commands(folder) -> List[str]:
    return [rec.command for rec in records(folder)]
