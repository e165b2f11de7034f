"""Where one controller keeps its files, and how it reaches a node: the
vendored GNU parallel, the state and run directories, the ssh wrapper with its
shared connections (session groups), and the environment parallel runs in."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Set

from pegpar.errors import UserError

if TYPE_CHECKING:  # not imported at run time: `pegpar q` imports this module first, before the rest
    from pegpar.expand import SubNode

_HERE = os.path.dirname(os.path.abspath(__file__))
JOB_MARK = "PEGPAR_JOB"


def parallel_script() -> str:
    """The vendored GNU parallel: inside the installed package, or vendor/ in a checkout."""
    for candidate in (os.path.join(_HERE, "vendor", "parallel"),
                      os.path.join(os.path.dirname(_HERE), "vendor", "parallel", "parallel")):
        if os.path.isfile(candidate):
            return candidate
    raise UserError("the vendored GNU parallel is missing from this installation",
                    hint="reinstall pegpar")


@dataclass(frozen=True)
class Runtime:
    """Where one controller keeps its files.

    `state_dir` sits next to the queue file (joblog, logs, journal). `run_dir`
    is short and free of spaces: it holds the ssh wrapper (parallel starts the
    ControlMaster only for an ssh command without spaces, F6), the ControlPath
    sockets (unix socket paths are limited to ~100 bytes) and PARALLEL_HOME
    (so a user's ~/.parallel/config cannot change pegpar's behaviour, F9).
    """

    state_dir: str
    run_dir: str
    ssh: str  # the wrapper script
    ssh_config: Optional[str]
    connect_timeout: int = 10
    # session groups whose wrapper this process wrote (an earlier run's may
    # name another ssh config or timeout)
    written: Set[int] = field(default_factory=set, compare=False)

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.state_dir, "logs")

    @property
    def waves_dir(self) -> str:
        return os.path.join(self.run_dir, "waves")

    def ssh_for(self, group: int) -> str:
        return self.ssh if group == 0 else f"{self.ssh}-{group}"

    def job_id(self, seq: int) -> str:
        """Unique on any node: this queue's key and the job's seq (seqs are
        never given twice under one key: see last_seq)."""
        return f"{os.path.basename(self.run_dir)}-{seq}"

    def last_seq(self) -> int:
        """The highest seq handed out under this key, whatever joblog counted
        them: a killed job's mark stays on its node for a day, and a new job
        under the same id would not run (a fresh --joblog, a deleted .pegpar)."""
        try:
            with open(os.path.join(self.run_dir, "last-seq"), encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def note_seq(self, seq: int) -> None:
        """Before jobs up to `seq` are started (a crash then still counts them):
        one write in place, fixed width (a rename per dispatch cost a tenth of
        the wall time of short jobs)."""
        fd = os.open(os.path.join(self.run_dir, "last-seq"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%20d\n" % seq, 0)
        finally:
            os.close(fd)

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["PARALLEL_HOME"] = os.path.join(self.run_dir, "parallel-home")
        env["PARALLEL_SHELL"] = "/bin/sh"
        env.pop("PARALLEL", None)  # options from the environment would change pegpar's runs
        env["PEGPAR_KILLED"] = killed_dir(env)
        return env


def killed_dir(env: Dict[str, str]) -> str:
    """Where this machine keeps the marks of killed jobs for the user of `env`:
    the path remote.KILLED_DIR computes in the shell ($TMPDIR or /tmp, then
    pegpar-killed-$USER, or the uid where USER is unset)."""
    user = env.get("USER") or str(os.geteuid())
    return f"{env.get('TMPDIR') or '/tmp'}/pegpar-killed-{user}"


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def run_dir_of(state_dir: str) -> str:
    """The run directory of a state directory: this user's, in the temporary
    directory, named by a hash of the state directory's absolute path."""
    key = hashlib.sha1(os.path.abspath(state_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"pegpar-{os.getuid()}", key)


def runtime(state_dir: str, ssh_config: Optional[str], connect_timeout: int = 10) -> Runtime:
    """Create the state and run directories and write the ssh wrapper."""
    if ssh_config is not None:
        if not os.path.isfile(ssh_config):
            raise UserError("ssh config file does not exist", where=ssh_config)
        ssh_config = os.path.abspath(ssh_config)
    state_dir = os.path.abspath(state_dir)
    _private_dir(state_dir)
    _private_dir(os.path.join(state_dir, "logs"))
    run_dir = run_dir_of(state_dir)
    base = _private_dir(os.path.dirname(run_dir))
    _claim(run_dir)
    for sub in ("parallel-home", "waves", "cm"):
        _private_dir(os.path.join(run_dir, sub))
    rt = Runtime(state_dir, run_dir, os.path.join(run_dir, "ssh"), ssh_config, connect_timeout)
    _write_wrapper(rt, 0)
    sweep(base)
    return rt


IN_USE = "in-use"  # in a run directory: a shared lock held by every pegpar process that uses it
_claims: Dict[str, int] = {}  # run directory -> the descriptor holding its shared lock, for this process


def _claim(run_dir: str) -> None:
    """Hold the run directory's shared lock for as long as this process lives,
    so that a sweep by another pegpar leaves it alone."""
    if run_dir in _claims:
        return
    while True:
        _private_dir(run_dir)
        path = os.path.join(run_dir, IN_USE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                _claims[run_dir] = fd
                return
        except FileNotFoundError:
            pass
        os.close(fd)  # swept just now: make it again


def sweep(base: str) -> List[str]:
    """Remove the run directories of `base` that nothing uses any more, so that
    one per queue ever run does not pile up: no pegpar holds it, no shared ssh
    connection (ControlMaster) of it still answers, and it keeps no wave's files
    (a crashed run's jobs are found through them). Returns what was removed."""
    removed = []
    for name in os.listdir(base):
        run_dir = os.path.join(base, name)
        if run_dir in _claims or not os.path.isdir(run_dir) or os.path.islink(run_dir):
            continue
        try:
            fd = os.open(os.path.join(run_dir, IN_USE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a pegpar uses it
            if _busy(run_dir):
                continue
            gone = os.path.join(base, f".gone-{name}-{os.getpid()}")
            try:
                os.rename(run_dir, gone)  # a pegpar starting now makes a fresh one (_claim)
            except OSError:
                continue
            shutil.rmtree(gone, ignore_errors=True)
            removed.append(run_dir)
        finally:
            os.close(fd)
    return removed


def _busy(run_dir: str) -> bool:
    """A wave's files, or a ControlMaster socket that still accepts a connection."""
    try:
        if os.listdir(os.path.join(run_dir, "waves")):
            return True
    except FileNotFoundError:
        pass
    try:
        sockets = [os.path.join(run_dir, "cm", n) for n in os.listdir(os.path.join(run_dir, "cm"))]
    except FileNotFoundError:
        return False
    for path in sockets:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                continue
    return False


def ssh_wrapper(rt: Runtime, group: int) -> str:
    """The ssh command of a session group, written when first needed."""
    return rt.ssh_for(group) if group in rt.written else _write_wrapper(rt, group)


def _write_wrapper(rt: Runtime, group: int) -> str:
    """The ssh command parallel runs for one session group (see session_groups):
    connection sharing through its own ControlMaster; host-key checking is left
    as the user's ssh config has it."""
    path = rt.ssh_for(group)
    argv = ["ssh"]
    if rt.ssh_config:
        argv += ["-F", rt.ssh_config]
    suffix = f".{group}" if group else ""
    argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={rt.run_dir}/cm/%C{suffix}",
             "-o", "ControlPersist=600", "-o", f"ConnectTimeout={rt.connect_timeout}",
             "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "BatchMode=yes"]
    script = "#!/bin/sh\n" + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n' + REPORT_END
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(script)
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    rt.written.add(group)
    return path


# The end of a job run by a wave (PEGPAR_DONE names the wave's `.done` file;
# parallel sets PARALLEL_SEQ): one line "SEQ STATUS", a single small append.
# No `${...}`: parallel reads the local job line below as its command template.
REPORT_END = """s=$?
[ -z "$PEGPAR_DONE" ] || echo "$PARALLEL_SEQ $s" >> "$PEGPAR_DONE"
exit $s
"""


def sshlogin(host: str) -> str:
    """A host as GNU parallel's --sshlogin takes it: ssh's URL form
    `ssh://[user@]host[:port]` becomes `[user@]host[:port]` (parallel would
    read `ssh` as a user and the rest as a password); the ssh it runs gets
    `-p PORT -l USER host`, which shares the connection ssh://... opened."""
    return host[len("ssh://"):] if host.startswith("ssh://") else host


SESSIONS_PER_MASTER = 8  # sshd's default MaxSessions is 10 per connection


def session_groups(nodes: List[SubNode]) -> Dict[str, int]:
    """Sub-node name -> which shared connection its jobs use: counting each
    sub-node's slots (a job each), the sub-nodes that start within a host's
    1st to 8th slot share one master, those within the 9th to 16th a second
    one, so a host with many sub-nodes stays within sshd's MaxSessions (10 by
    default; a single sub-node with more slots than that needs it raised)."""
    seen: Dict[str, int] = {}
    groups = {}
    for node in nodes:
        k = seen.get(node.host, 0)
        seen[node.host] = k + node.slots  # each slot may run a job: a session
        groups[node.name] = k // SESSIONS_PER_MASTER
    return groups


def group_counts(nodes: List[SubNode]) -> Dict[str, int]:
    """Host -> how many session groups (shared connections) its sub-nodes use."""
    counts: Dict[str, int] = {}
    groups = session_groups(nodes)
    for node in nodes:
        counts[node.host] = max(counts.get(node.host, 0), groups[node.name] + 1)
    return counts
