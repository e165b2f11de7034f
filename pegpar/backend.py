"""GNU parallel as the executor: waves of jobs, one parallel per host.

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
parallel's record then counts that wait in the job's runtime: pegpar's
takes the job's end from its end report (when the `.done` file was written).
Each job's output goes to its own files, which pegpar tails: lines from
different jobs never mix and a last line without a newline stays whole. A
local job's shell writes them itself (parallel runs with `-u` and copies
nothing, a third of its work per job); a remote job's output comes back
through ssh, and parallel writes it (`--results`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from pegpar import forkserver, joblog, proc
from pegpar.errors import UserError
from pegpar.expand import Job, SubNode
from pegpar.remote import JOB_GUARD, REMOTE_GUARD
from pegpar.runtime import JOB_MARK, REPORT_END, Runtime, parallel_script, ssh_wrapper, sshlogin

# How a local wave runs a job: the command line parallel's shell (/bin/sh)
# runs, parallel quoting the command, its log name and its id into it: the job
# under its kill mark, its output into its own files, then the report of its
# end; the exit status is the job's, as parallel's shell would have it (a job
# killed by a signal: 128 + N). One shell and the job's own `sh -c`: no
# wrapper process in between.
LOCAL_JOB = (f"{JOB_MARK}={{3}} sh -c {shlex.quote(JOB_GUARD)} {{DECODE}} >{{LOGS}}/{{2}} 2>{{LOGS}}/{{2}}.err\n"
             + REPORT_END)


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
    slots: Tuple[int, ...] = (0,)  # the sub-node's slot indices it holds


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
        """Its parallel's pid while that still runs: its pid file is locked
        from before the fork until it ends (forkserver)."""
        return forkserver.running(self.stem + ".pid")

    def remove(self) -> None:
        """Delete its files, once its parallel has ended and its jobs are accounted for."""
        folder, name = os.path.split(self.stem)
        for other in os.listdir(folder):
            if other.startswith(name + "."):
                try:
                    os.unlink(os.path.join(folder, other))
                except FileNotFoundError:
                    pass


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


def adopt_wave(left: LeftWave, host: str, jobs: List[Optional[Running]]) -> Optional[Wave]:
    """Follow a wave whose parallel still runs; `jobs` in the wave's order, None
    for a job already recorded. None when the wave's parallel has ended."""
    pid = left.pid()
    if pid is None:
        return None
    stem = left.stem
    # not this process's child, nor its fork server's: watched through its pid file alone
    wave = Wave(host, jobs, forkserver.Forked(pid, stem, None),  # type: ignore[arg-type]
                joblog.Follower(stem + ".joblog"),
                _wave_files(stem))
    wave.finished.update({i: None for i, job in enumerate(jobs, 1) if job is None})  # type: ignore[misc]
    return wave


_SAFE = re.compile(r"[^A-Za-z0-9_.=,-]+")


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
# How long after its last input an open wave's joblog is read each turn (records
# come within milliseconds; a later one is read at the next input or the close)
RECORDS_WINDOW = 2.0


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
    ended: Dict[int, float] = field(default_factory=dict)  # wave seq -> when its end was reported, not yet recorded
    unflushed: int = 0  # ends reported since input last arrived (parallel has not reaped them)
    fed_at: float = field(default_factory=time.time)  # when it last got input
    running: int = -1  # jobs that have neither reported their end nor been recorded

    def __post_init__(self) -> None:
        if self.running < 0:
            self.running = sum(1 for job in self.jobs if job is not None)

    def new_records(self) -> List[tuple]:
        """(Running, parallel's Record) for jobs that ended since the last call."""
        out = []
        for rec in self.follower.new_records():
            if 1 <= rec.seq <= len(self.jobs) and rec.seq not in self.finished:
                ended_at = self.ended.pop(rec.seq, None)
                if ended_at is None:
                    self.running -= 1
                elif ended_at - rec.start < rec.runtime:
                    # parallel reaped it late, once input came (notes F1): its
                    # runtime would count the wait; the end report tells the end
                    rec = dataclasses.replace(rec, runtime=max(0.0, ended_at - rec.start))
                self.finished[rec.seq] = rec
                out.append((self.jobs[rec.seq - 1], rec))
        return out

    def records_due(self) -> bool:
        """Whether parallel may have written records since: an open wave's
        parallel waits for input and reaps only when input arrives (notes F1),
        so its joblog is read for a while after each input, not every turn."""
        return self.fd is None or time.time() - self.fed_at < RECORDS_WINDOW

    def new_ends(self) -> List[tuple]:
        """(Running, exit status) for jobs of an open wave that reported their
        end and are not recorded yet: parallel records them once input
        arrives (`extend`) or ends (`close`)."""
        if self.ends is None:
            return []
        out = []
        lines = self.ends.new_lines()
        # the file's last write: no earlier than the end of any job read here,
        # and the end itself for the one read as soon as it was written
        written = (self.ends.modified() or time.time()) if lines else 0.0
        for line in lines:
            seq, _, status = line.partition(" ")
            if not (seq.isdigit() and status.lstrip("-").isdigit()):
                continue
            index = int(seq)
            if 1 <= index <= len(self.jobs) and index not in self.finished and index not in self.ended:
                self.ended[index] = written
                self.running -= 1
                out.append((self.jobs[index - 1], int(status)))
        return out

    @property
    def exit_path(self) -> str:
        """The file the fork server writes when the wave's parallel has ended."""
        return self.follower.path[:-len(".joblog")] + ".exit"

    @property
    def ends_path(self) -> str:
        return self.ends.path if self.ends is not None else ""

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
        self.fed_at = time.time()
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
        for follower in (self.follower, self.ends):
            if follower is not None:
                follower.close()
        for path in self.files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# decodes a command, one column of a wave's input (forkserver.percent_encoded), byte for byte
_DECODE = "{=1 s/%([0-9A-F]{2})/chr(hex($1))/ge =}"


def local_job_line(logs_dir: str) -> str:
    """The command line a local wave's parallel runs for each job (LOCAL_JOB)."""
    return LOCAL_JOB.replace("{DECODE}", _DECODE).replace("{LOGS}", shlex.quote(logs_dir))


def _records(rt: Runtime, jobs: List[Running]) -> bytes:
    """A wave's input: per job the encoded command, its log name and its kill mark."""
    return b"".join(forkserver.percent_encoded(j.command) + b"\t" + os.path.basename(j.out_path).encode() + b"\t"
                    + rt.job_id(j.seq).encode() + b"\0" for j in jobs)


class Warm:
    """A GNU parallel started ahead of need for one host (and session group):
    forked from the fork server, it has parsed its options, and waits for
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
        args = ["-0", "--colsep", "\t", "--trim", "n",
                "--joblog", self.stem + ".joblog", "-j", str(slots)]
        if node.local:
            args += ["-u"]
        else:
            # `exec`: parallel's shell (/bin/sh, which does not replace itself
            # with the command it runs) becomes the wrapper, one process less per job
            args += ["--results", os.path.join(rt.logs_dir, "{2}"),
                     "--ssh", "exec " + shlex.quote(ssh_wrapper(rt, group)), "-S", f"{slots}/{sshlogin(node.host)}"]
        if timeout:
            args += ["--timeout", f"{timeout:g}"]
        if node.local:
            args += [local_job_line(rt.logs_dir)]
        else:
            # run by /bin/sh on the node, which the guard's shell replaces
            args += ["export", f"{JOB_MARK}={{3}};", "exec", "sh", "-c", shlex.quote(REMOTE_GUARD), _DECODE]
        env = rt.env()
        env["PEGPAR_DONE"] = self.stem + ".done"
        # forked from the fork server, which compiled parallel once
        self.process, self._fd = forkserver.start(parallel_script(), args, env=env, stem=self.stem)
        self.why = ""  # once discarded: parallel's last word

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
            # the whole group: a parallel still starting holds dummy `sleep 10101`
            # children (reserve_process) that it alone would kill later
            proc.signal_group(self.process, signal.SIGKILL)
            self.process.wait()
        try:  # what parallel (or the fork server) said last: why it ended, if it did
            with open(self.stem + ".stderr", errors="replace") as f:
                self.why = (f.read().strip().splitlines() or [""])[-1]
        except FileNotFoundError:
            pass
        for path in _wave_files(self.stem):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _wave_files(stem: str) -> List[str]:
    """A wave's files: the job ids it was given, parallel's joblog, the jobs'
    end reports, parallel's pid and wait status (forkserver), and parallel's
    own stderr (read last by Wave.messages)."""
    return [stem + ext for ext in (".ids", ".joblog", ".done", ".pid", ".exit", ".stderr")]


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
    if wave is None:  # discarded by fill
        raise UserError("GNU parallel did not start" + (f": {warm.why}" if warm.why else ""),
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
