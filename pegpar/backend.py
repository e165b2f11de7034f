"""GNU parallel as the executor: the vendored script, the ssh wrapper, waves of jobs.

pegpar decides placement; parallel runs what it is handed. A *wave* is one
parallel invocation for jobs on ONE host: no hostgroups (F3/F4), no duplicate
sshlogins (F5). Its input is a pipe only pegpar writes. A *closed* wave has
complete input, so parallel writes each job's joblog line the moment the job
ends (notes F1/F2). An *open* wave keeps its pipe open and takes more jobs,
one per sub-node that frees, so one parallel serves a host for as long as its
sub-nodes keep getting work: parallel reaps a finished job only when more input
arrives (F1), so each job also reports its end out of band, a line in the
wave's `.done` file written by the job's local wrapper (the ssh wrapper for
remote jobs), and pegpar either hands that sub-node its next job (input
arrives: parallel reaps and records the finished one) or closes the wave.
Each job's output goes to its own files (`--results`), which pegpar tails:
lines from different jobs never mix and a last line without a newline stays
whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from pegpar import joblog, proc
from pegpar.errors import UserError
from pegpar.expand import Job, SubNode

_HERE = os.path.dirname(os.path.abspath(__file__))
JOB_MARK = "PEGPAR_JOB"

# Where a node keeps the ids of killed jobs, so that a job whose shell had not
# started when the kill came never runs (KILL_SCRIPT writes them, JOB_GUARD
# reads them). No braces: parallel reads JOB_GUARD as part of its command template.
KILLED_DIR = 'd=$TMPDIR; [ -n "$d" ] || d=/tmp; d=$d/pegpar-killed-$USER'

# The job's shell, run as `sh -c JOB_GUARD COMMAND` under its kill mark: a job
# killed before it started exits at once (143, as for SIGTERM); else the command
# replaces it, run by `sh -c` as written.
JOB_GUARD = KILLED_DIR + '; [ -e "$d/$PEGPAR_JOB" ] && exit 143; exec sh -c "$0"'

# Run by `sh -c` on a node with the job ids (letters, digits, `-`) as arguments: marks the
# ids killed (files over a day old go), then signals every process whose environment
# carries one of the ids, then KILLs survivors. Marked first: a job that starts after the
# scan sees its mark and does not run; one that started before is found by the scan.
KILL_SCRIPT = KILLED_DIR + r"""
mkdir -p "$d" 2>/dev/null && for id in "$@"; do : > "$d/$id"; done
find "$d" -type f -mmin +1440 -exec rm -f {} + 2>/dev/null
found() {
  set -- $(for id in "$@"; do echo "-e PEGPAR_JOB=$id"; done)
  grep -lzx "$@" /proc/[0-9]*/environ 2>/dev/null | sed -e 's,^/proc/,,' -e 's,/environ$,,'
}
pids=$(found "$@"); [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 20 ]; do
  pids=$(found "$@"); [ -z "$pids" ] && exit 0
  sleep 0.1; i=$((i+1))
done
kill -KILL $pids 2>/dev/null
exit 0
"""


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
        """Unique on any node: this queue's key and the job's seq."""
        return f"{os.path.basename(self.run_dir)}-{seq}"

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["PARALLEL_HOME"] = os.path.join(self.run_dir, "parallel-home")
        env["PARALLEL_SHELL"] = "/bin/sh"
        env.pop("PARALLEL", None)  # options from the environment would change pegpar's runs
        return env


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def runtime(state_dir: str, ssh_config: Optional[str], connect_timeout: int = 10) -> Runtime:
    """Create the state and run directories and write the ssh wrapper."""
    if ssh_config is not None:
        if not os.path.isfile(ssh_config):
            raise UserError("ssh config file does not exist", where=ssh_config)
        ssh_config = os.path.abspath(ssh_config)
    state_dir = os.path.abspath(state_dir)
    _private_dir(state_dir)
    _private_dir(os.path.join(state_dir, "logs"))
    key = hashlib.sha1(state_dir.encode()).hexdigest()[:12]
    base = _private_dir(os.path.join(tempfile.gettempdir(), f"pegpar-{os.getuid()}"))
    run_dir = _private_dir(os.path.join(base, key))
    for sub in ("parallel-home", "waves", "cm"):
        _private_dir(os.path.join(run_dir, sub))
    rt = Runtime(state_dir, run_dir, os.path.join(run_dir, "ssh"), ssh_config, connect_timeout)
    _write_wrapper(rt, 0)
    return rt


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

# How a local wave runs a job: the command line parallel's shell (/bin/sh)
# runs, parallel quoting the id and the decoded command into it: the job under
# its kill mark, then the report of its end; the exit status is the job's, as
# parallel's shell would have it (a job killed by a signal: 128 + N). One shell
# and the job's own `sh -c`: no wrapper process in between.
LOCAL_JOB = f"{JOB_MARK}={{3}} sh -c {shlex.quote(JOB_GUARD)} {{DECODE}}\n" + REPORT_END


def sshlogin(host: str) -> str:
    """A host as GNU parallel's --sshlogin takes it: ssh's URL form
    `ssh://[user@]host[:port]` becomes `[user@]host[:port]` (parallel would
    read `ssh` as a user and the rest as a password); the ssh it runs gets
    `-p PORT -l USER host`, which shares the connection ssh://... opened."""
    return host[len("ssh://"):] if host.startswith("ssh://") else host


SESSIONS_PER_MASTER = 8  # sshd's default MaxSessions is 10 per connection


def session_groups(nodes: List[SubNode]) -> Dict[str, int]:
    """Sub-node name -> which shared connection its jobs use: the 1st to 8th
    sub-node of a host share one master, the 9th to 16th a second one, so a
    host with many sub-nodes never exceeds sshd's MaxSessions."""
    seen: Dict[str, int] = {}
    groups = {}
    for node in nodes:
        k = seen.get(node.host, 0)
        seen[node.host] = k + 1
        groups[node.name] = k // SESSIONS_PER_MASTER
    return groups


@dataclass
class Running:
    """A job handed to parallel: who runs it and where its output goes."""

    seq: int
    node: SubNode
    command: str  # rendered
    out_path: str
    err_path: str
    started: float = 0.0
    job: Optional["Job"] = None  # what was taken from the queue


@dataclass(frozen=True)
class LeftWave:
    """A wave started by a controller that died, as its files tell it: the
    waves' files stay until the wave has been read."""

    stem: str
    ids: List[bytes]  # job ids, in the wave's order

    def index(self, rt: Runtime, seq: int) -> int:
        """The wave's own seq (1-based) of pegpar's job `seq`."""
        return self.ids.index(rt.job_id(seq).encode()) + 1

    def record(self, rt: Runtime, seq: int) -> Optional[joblog.Record]:
        index = self.index(rt, seq)
        for rec in joblog.read(self.stem + ".joblog"):
            if rec.seq == index:
                return rec
        return None

    def pid(self) -> Optional[int]:
        """Its parallel's pid while that still runs: the process whose command
        line names this wave's joblog (found without a pid file, which a crash
        right after the start of parallel would not have left)."""
        mark = (self.stem + ".joblog").encode()
        for name in os.listdir("/proc"):
            if name.isdigit() and _cmdline_has(int(name), mark):
                return int(name)
        return None

    def remove(self) -> None:
        """Delete its files, once its parallel has ended and its jobs are accounted for."""
        folder, name = os.path.split(self.stem)
        for other in os.listdir(folder):
            if other.startswith(name + "."):
                try:
                    os.unlink(os.path.join(folder, other))
                except FileNotFoundError:
                    pass


def _cmdline_has(pid: int, word: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word in f.read().split(b"\0")
    except OSError:  # gone, or not Linux: no wave to follow
        return False


def left_wave(rt: Runtime, seq: int) -> Optional[LeftWave]:
    """The wave that was given job `seq`, if its files are still there."""
    wanted = rt.job_id(seq).encode()
    for name in os.listdir(rt.waves_dir):
        if not name.endswith(".ids"):
            continue
        try:
            with open(os.path.join(rt.waves_dir, name), "rb") as f:
                ids = [i for i in f.read().split(b"\0") if i]
        except OSError:
            continue
        if wanted in ids:
            return LeftWave(os.path.join(rt.waves_dir, name[:-4]), ids)
    return None


class _Adopted:
    """A wave's parallel started by a controller that died: not a child of
    this process, so it is watched through its pid (the Popen calls a Wave uses)."""

    def __init__(self, wave: LeftWave, pid: int):
        self.wave = wave
        self.pid = pid

    def poll(self) -> Optional[int]:
        if not _cmdline_has(self.pid, (self.wave.stem + ".joblog").encode()):
            # the pid found first may have been a short-lived fork of parallel
            self.pid = self.wave.pid() or self.pid
            if not _cmdline_has(self.pid, (self.wave.stem + ".joblog").encode()):
                return 0
        return None

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def adopt_wave(left: LeftWave, host: str, jobs: List[Optional[Running]]) -> Optional[Wave]:
    """Follow a wave whose parallel still runs; `jobs` in the wave's order, None
    for a job already recorded. None when the wave's parallel has ended."""
    pid = left.pid()
    if pid is None:
        return None
    stem = left.stem
    wave = Wave(host, jobs, _Adopted(left, pid), joblog.Follower(stem + ".joblog"),  # type: ignore[arg-type]
                _wave_files(stem))
    wave.finished.update({i: None for i, job in enumerate(jobs, 1) if job is None})  # type: ignore[misc]
    return wave


_SAFE = re.compile(r"[^A-Za-z0-9_.=,-]+")


def kill_jobs(rt: Runtime, node: SubNode, seqs: List[int]) -> subprocess.Popen:
    """Start killing jobs on their node (all processes carrying their marks)."""
    ids = [rt.job_id(s) for s in seqs]
    if node.local:
        argv = ["sh", "-c", KILL_SCRIPT, "pegpar-kill"] + ids
    else:
        argv = [rt.ssh, node.host, "sh -c " + shlex.quote(KILL_SCRIPT) + " pegpar-kill " +
                " ".join(shlex.quote(i) for i in ids)]
    return proc.spawn(argv, env=rt.env(), stderr=subprocess.DEVNULL)


class Probe:
    """An ssh check of one host, running in the background. A successful check
    leaves a ControlMaster behind that later jobs share, so jobs starting
    together never race to create one: one master per session group of the
    host (`groups`, see session_groups), the first checked first, the others
    then made MASTERS_AT_ONCE at a time (sshd drops connections beyond its
    MaxStartups, 10 by default). `shared_ok`: a live ControlMaster for the
    host (`ssh -O check`, no round trip) counts as an answer; a master whose
    host died exits within the ServerAlive bound (15 s)."""

    def __init__(self, rt: Runtime, host: str, timeout: float, shared_ok: bool = False, groups: int = 1):
        self.rt = rt
        self.host = host
        self.deadline = time.time() + timeout
        self.timeout = timeout
        self._err = tempfile.TemporaryFile()
        self.checking = shared_ok
        self.later = list(range(1, groups))  # the other groups' masters, once the host answered
        self.others: List[subprocess.Popen] = []
        self.answered = False  # the first check succeeded: the others' turn
        argv = [rt.ssh, "-O", "check", host] if shared_ok else [rt.ssh, host, "true"]
        self.process = proc.spawn(argv, env=rt.env(), stderr=self._err)

    def result(self) -> Optional[str]:
        """None while running; "" when the host answered; else the reason it failed."""
        if self.answered:
            return self._others()
        code = self.process.poll()
        if code is not None and self.checking:
            self.checking = False
            if code == 0:
                return self._answered()
            self._err.seek(0)
            self._err.truncate()
            self.process = proc.spawn([self.rt.ssh, self.host, "true"], env=self.rt.env(), stderr=self._err)
            return None
        if code is None:
            return self._waiting()
        if code == 0:
            return self._answered()
        return self._reason(code)

    def _answered(self) -> Optional[str]:
        self.answered = True
        self._err.seek(0)
        self._err.truncate()  # what the first check said ("Master running"): not a reason
        return self._others()

    def _others(self) -> Optional[str]:
        """The other groups' masters: "" once all are up."""
        for p in list(self.others):
            code = p.poll()
            if code is None:
                continue
            self.others.remove(p)
            if code != 0:
                self.later.clear()
                return self._reason(code)
        while self.later and len(self.others) < MASTERS_AT_ONCE:
            self.deadline = time.time() + self.timeout  # each connection has its own time to answer
            ssh = ssh_wrapper(self.rt, self.later.pop(0))
            self.others.append(proc.spawn([ssh, self.host, "true"], env=self.rt.env(), stderr=self._err))
        if self.others:
            return self._waiting()
        return ""

    def _waiting(self) -> Optional[str]:
        if time.time() < self.deadline:
            return None
        self.kill()
        return f"no answer within {self.timeout:g} s"

    def kill(self) -> None:
        """Stop the check (nothing more is started)."""
        for p in [self.process] + self.others:
            p.kill()
            p.wait()
        self.others.clear()
        self.later.clear()

    def _reason(self, code: int) -> str:
        self._err.seek(0)
        lines = [x for x in self._err.read().decode("utf-8", "replace").splitlines() if x.strip()]
        for p in self.others:
            p.kill()
            p.wait()
        self.others.clear()
        return lines[-1] if lines else f"ssh exited {code}"


MASTERS_AT_ONCE = 4


def probe(rt: Runtime, hosts: List[str], timeout: float, shared_ok: bool = False,
          groups: Optional[Dict[str, int]] = None) -> Dict[str, str]:
    """Check hosts in parallel; {host: reason} for those that fail. `groups`:
    how many session groups (shared connections) each host has (default 1)."""
    probes = [Probe(rt, h, timeout, shared_ok, (groups or {}).get(h, 1)) for h in hosts]
    failed: Dict[str, str] = {}
    while probes:
        for p in list(probes):
            r = p.result()
            if r is not None:
                probes.remove(p)
                if r:
                    failed[p.host] = r
        time.sleep(0.02)
    return failed


def group_counts(nodes: List[SubNode]) -> Dict[str, int]:
    """Host -> how many session groups (shared connections) its sub-nodes use."""
    counts: Dict[str, int] = {}
    for node in nodes:
        counts[node.host] = counts.get(node.host, 0) + 1
    return {host: -(-n // SESSIONS_PER_MASTER) for host, n in counts.items()}


TIMED_OUT = "This job was killed because it timed out:"


def parallel_messages(lines: List[str]) -> List[str]:
    """parallel's stderr without its time-out notices: each quotes the whole
    job line (pegpar's wrapper, over several lines), and pegpar reports the
    time-out itself."""
    kept: List[str] = []
    skipping = quoted = False
    for line in lines:
        if TIMED_OUT in line:
            skipping, quoted = True, False
            continue
        if skipping:
            if not line.startswith("parallel: "):
                continue
            if line.startswith("parallel: Warning: ") and not quoted:
                quoted = True  # the first line of the quoted job
                continue
            skipping = False
        kept.append(line)
    return kept


def log_name(seq: int, node: SubNode) -> str:
    """File name stem for a job's output: `SEQ.sub-node`, safe on any filesystem."""
    return f"{seq}.{_SAFE.sub('_', node.name).strip('_')}"


MAX_WAVE_JOBS = 1000


@dataclass
class Wave:
    """One parallel invocation for jobs on one host: closed (complete input)
    or open (`fd`: more jobs can follow, one per sub-node that frees)."""

    host: str
    jobs: List[Running]
    process: subprocess.Popen
    follower: joblog.Follower
    files: List[str]
    finished: Dict[int, joblog.Record] = field(default_factory=dict)  # wave seq -> record
    errors: List[str] = field(default_factory=list)
    fd: Optional[int] = None  # the input pipe, while open
    slots: int = 0
    ids_path: str = ""
    ends: Optional[joblog.Follower] = None  # the `.done` file, read while open
    ended: Dict[int, int] = field(default_factory=dict)  # wave seq -> exit status, not yet recorded
    unflushed: int = 0  # ends reported since input last arrived (parallel has not reaped them)
    running: int = -1  # jobs that have neither reported their end nor been recorded

    def __post_init__(self) -> None:
        if self.running < 0:
            self.running = sum(1 for job in self.jobs if job is not None)

    def new_records(self) -> List[tuple]:
        """(Running, parallel's Record) for jobs that ended since the last call."""
        out = []
        for rec in self.follower.new_records():
            if 1 <= rec.seq <= len(self.jobs) and rec.seq not in self.finished:
                self.finished[rec.seq] = rec
                if self.ended.pop(rec.seq, None) is None:
                    self.running -= 1
                out.append((self.jobs[rec.seq - 1], rec))
        return out

    def new_ends(self) -> List[tuple]:
        """(Running, exit status) for jobs of an open wave that reported their
        end and are not recorded yet: parallel records them once input
        arrives (`extend`) or ends (`close`)."""
        if self.ends is None:
            return []
        out = []
        for line in self.ends.new_lines():
            seq, _, status = line.partition(" ")
            if not (seq.isdigit() and status.lstrip("-").isdigit()):
                continue
            index = int(seq)
            if 1 <= index <= len(self.jobs) and index not in self.finished and index not in self.ended:
                self.ended[index] = int(status)
                self.running -= 1
                out.append((self.jobs[index - 1], int(status)))
        return out

    @property
    def is_open(self) -> bool:
        return self.fd is not None

    def room(self) -> int:
        """How many more jobs an open wave can take: its slots minus the jobs
        that have not reported their end; none once it has taken MAX_WAVE_JOBS
        (a new parallel then starts afresh: what a wave keeps stays bounded)."""
        if self.fd is None or len(self.jobs) >= MAX_WAVE_JOBS:
            return 0
        return self.slots - self.running

    def extend(self, rt: Runtime, jobs: List[Running]) -> bool:
        """Hand an open wave more jobs; False when its parallel is gone (the
        wave is closed then, and the caller starts another)."""
        if self.fd is None or self.process.poll() is not None:
            self.close()
            return False
        # the ids first: a crash in between names a job parallel never got,
        # which recovery reports as interrupted (never one that runs unnamed)
        with open(self.ids_path, "ab") as f:
            f.write(b"".join(rt.job_id(j.seq).encode() + b"\0" for j in jobs))
        try:
            _write_all(self.fd, _records(rt, jobs))
        except OSError:  # parallel died just now
            self.close()
            self.jobs += jobs  # named in .ids: recorded as unfinished when the wave is read
            self.running += len(jobs)
            return True
        self.jobs += jobs
        self.running += len(jobs)
        self.unflushed = 0
        return True

    def close(self) -> None:
        """Complete the input: parallel records the jobs that ended, runs the
        rest and exits."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def exited(self) -> bool:
        return self.process.poll() is not None

    def unfinished(self) -> List[Running]:
        return [j for i, j in enumerate(self.jobs, 1) if i not in self.finished]

    def terminate(self) -> None:
        """Kill the wave's jobs: parallel applies its --term-seq to each job,
        and remote jobs die with their ssh (F8)."""
        self.close()
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def messages(self) -> List[str]:
        """What parallel itself printed on stderr (warnings, errors)."""
        try:
            with open(self.files[-1], encoding="utf-8", errors="replace") as f:
                return parallel_messages([line.rstrip("\n") for line in f if line.strip()])
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        self.close()
        for path in self.files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _encoded(command: str) -> bytes:
    """A command as one column of a tab-separated input record: `%` and tab
    percent-encoded, decoded back by parallel (`{=1 ... =}`) byte for byte."""
    raw = command.encode("utf-8", "surrogateescape")
    return raw.replace(b"%", b"%25").replace(b"\t", b"%09")


_DECODE = "{=1 s/%([0-9A-F]{2})/chr(hex($1))/ge =}"


def _records(rt: Runtime, jobs: List[Running]) -> bytes:
    """A wave's input: per job the encoded command, its log name and its kill mark."""
    return b"".join(_encoded(j.command) + b"\t" + os.path.basename(j.out_path).encode() + b"\t"
                    + rt.job_id(j.seq).encode() + b"\0" for j in jobs)


class Warm:
    """A GNU parallel started ahead of need for one host (and session group):
    it has compiled its 15,000 lines and parsed its options, and waits for
    input on a pipe. Writing a wave's jobs hands them over without paying
    parallel's start-up, which overlapped the running jobs; closing the pipe
    then makes the input complete (F2), or it stays open for more (`fill`)."""

    _count = 0

    def __init__(self, rt: Runtime, node: SubNode, slots: int, group: int, timeout: Optional[float]):
        Warm._count += 1
        self.rt = rt
        self.node = node
        self.slots = slots
        self.stem = os.path.join(rt.waves_dir, f"warm-{os.getpid()}-{Warm._count}")
        # --colsep alone would also trim whitespace around every column (the command)
        argv = ["perl", parallel_script(), "-0", "--colsep", "\t", "--trim", "n",
                "--joblog", self.stem + ".joblog", "-j", str(slots),
                "--results", os.path.join(rt.logs_dir, "{2}")]
        if not node.local:
            argv += ["--ssh", ssh_wrapper(rt, group), "-S", f"{slots}/{sshlogin(node.host)}"]
        if timeout:
            argv += ["--timeout", f"{timeout:g}"]
        if node.local:
            argv += [LOCAL_JOB.replace("{DECODE}", _DECODE)]
        else:
            argv += ["env", f"{JOB_MARK}={{3}}", "sh", "-c", shlex.quote(JOB_GUARD), _DECODE]
        env = rt.env()
        env["PEGPAR_DONE"] = self.stem + ".done"
        # The input is a pipe whose writing end only pegpar holds: if pegpar
        # dies, parallel reads EOF and exits with nothing to do.
        read_end, write_end = os.pipe()
        try:
            with open(self.stem + ".stderr", "wb") as err:
                self.process = proc.spawn(argv, env=env, stdin=read_end, stderr=err)
        finally:
            os.close(read_end)
        self._fd: Optional[int] = write_end

    def fill(self, jobs: List[Running], keep_open: bool = False) -> Optional[Wave]:
        """Hand the jobs over; None when this parallel is not (or no longer)
        there to take them, and the caller starts a wave the ordinary way.
        `keep_open`: the wave can take more jobs later (Wave.extend)."""
        fd, self._fd = self._fd, None
        if fd is None or self.process.poll() is not None:
            if fd is not None:
                os.close(fd)
            self.discard()
            return None
        os.set_blocking(fd, True)
        try:
            # Crash recovery finds the jobs by this file, so it comes first: a
            # crash after it names jobs parallel may never have got (reported as
            # interrupted and queued again, never lost); a crash before it leaves
            # a parallel that got nothing and exits at EOF (forget_unfilled).
            with open(self.stem + ".ids", "wb") as f:
                f.write(b"".join(self.rt.job_id(j.seq).encode() + b"\0" for j in jobs))
            _write_all(fd, _records(self.rt, jobs))
        except BaseException:
            os.close(fd)
            raise
        if not keep_open:
            os.close(fd)  # EOF: parallel's input is complete (also when pegpar dies here)
        return Wave(self.node.host, jobs, self.process, joblog.Follower(self.stem + ".joblog"),
                    _wave_files(self.stem),
                    fd=fd if keep_open else None, slots=self.slots, ids_path=self.stem + ".ids",
                    ends=joblog.Follower(self.stem + ".done") if keep_open else None)

    def discard(self) -> None:
        """Not needed after all (pegpar stops, the host left): end it and its files."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for path in _wave_files(self.stem):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _wave_files(stem: str) -> List[str]:
    """A wave's files: the job ids it was given, parallel's joblog, the jobs'
    end reports and parallel's own stderr (read last by Wave.messages)."""
    return [stem + ext for ext in (".ids", ".joblog", ".done", ".stderr")]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def start_wave(rt: Runtime, jobs: List[Running], *, timeout: Optional[float] = None,
               group: int = 0, slots: int = 0, keep_open: bool = False) -> Wave:
    """Hand `jobs` (all on one host, one session group) to a new parallel
    invocation: a ready one, filled at once."""
    warm = Warm(rt, jobs[0].node, max(slots, len(jobs)), group, timeout)
    wave = warm.fill(jobs, keep_open)
    if wave is None:
        with open(warm.stem + ".stderr", errors="replace") as f:
            why = f.read().strip().splitlines()
        warm.discard()
        raise UserError("GNU parallel did not start" + (f": {why[-1]}" if why else ""),
                        hint="is perl installed?")
    return wave


def forget_unfilled(rt: Runtime) -> None:
    """Files of ready parallels that a controller which died never filled (no
    `.ids`): their parallel read EOF and exited, and they hold no job."""
    names = set(os.listdir(rt.waves_dir))
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if name.startswith("warm-") and dot and stem + ".ids" not in names:
            try:
                os.unlink(os.path.join(rt.waves_dir, name))
            except FileNotFoundError:
                pass
