"""pegpar's benchmarks: each pegpar figure next to a reference measured in the same run.

    python3 bench/run.py            full run (about ten minutes); rewrites bench/RESULTS.md
    python3 bench/run.py --quick    CI: small counts, short; writes --out (default: a temporary file)

The run starts the real-sshd cluster of the tests (tests/cluster.py: 4 nodes on
127.0.0.2-5), times pegpar and its reference side by side, alternating their
repetitions so that a noisy neighbour slows both, and writes a markdown table:
median and min - max of each figure, the reference, their ratio and the target.
The Notes under the table are measured in the same run (joblog gaps, pegpar's
journal, CPU, time breakdowns) and say what a missed target is made of.

References are the vendored GNU parallel run by hand as an expert would (an
ssh wrapper script that turns ControlMaster on, as pegpar's own does), the ssh
round trip, and the Python interpreter's start-up. Nothing here asserts a time:
the numbers are for reading (tests/test_bench.py only checks that every row is
produced). `--only 1,3` runs some rows only, to look into one figure.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import linecache
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import cluster as cluster_lib  # noqa: E402  (tests/ is not a package)

from pegpar import joblog, proc  # noqa: E402

PARALLEL = os.path.join(ROOT, "vendor", "parallel", "parallel")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
FLEET_HEADER = "## Large fleets"  # bench/fleet.py's section of RESULTS.md, always the last
PEGPAR = [sys.executable, "-m", "pegpar"]
LONG_QUEUE = 50_000
SHORT_QUEUE = 100


@dataclass(frozen=True)
class Config:
    """How much work each figure does: the full run, or CI's quick pass."""

    quick: bool
    reps: int  # timed repetitions of a whole-command figure
    jobs: int  # `true` jobs of the throughput figures
    latency_jobs: int  # `sleep 0.2` jobs of the dispatch figure
    pops: int  # QueueFile.take calls per queue length
    idle_seconds: float  # the idle daemon is watched this long
    startup_reps: int  # `pegpar --help` / `status` runs
    wave_reps: int  # single-job GNU parallel invocations timed for the notes
    hang_guard: float  # seconds before a child counts as hung


FULL = Config(quick=False, reps=3, jobs=200, latency_jobs=80, pops=300, idle_seconds=30,
              startup_reps=15, wave_reps=10, hang_guard=600)
QUICK = Config(quick=True, reps=1, jobs=12, latency_jobs=12, pops=30, idle_seconds=5,
               startup_reps=3, wave_reps=2, hang_guard=120)


class BenchError(Exception):
    """A figure could not be measured (pegpar failed, a job did not run)."""


# -- numbers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    samples: Tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        s = sorted(self.samples)
        return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def stat(samples: Sequence[float]) -> Stat:
    if not samples:
        raise BenchError("no samples")
    return Stat(tuple(samples))


def fmt(x: float, unit: str) -> str:
    if unit == "s" and abs(x) < 0.1:
        return f"{x * 1000:.0f} ms" if abs(x) >= 0.01 else f"{x * 1000:.1f} ms"
    if unit == "ms":
        return f"{x:.1f} ms"
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:.{digits}f} {unit}".rstrip()


def fmt_stat(s: Stat, unit: str) -> str:
    if len(s.samples) == 1:
        return fmt(s.median, unit)
    return f"{fmt(s.median, unit)} ({fmt(s.lo, unit)} – {fmt(s.hi, unit)})"


@dataclass
class Row:
    number: str
    figure: str
    target: str
    pegpar: str = "–"
    reference: str = "–"
    ratio: str = "–"
    met: Optional[bool] = None
    error: str = ""
    notes: List[str] = field(default_factory=list)  # what was measured besides the figure
    why: List[str] = field(default_factory=list)  # what a missed target is made of

    def compare(self, value: float, ok: bool) -> None:
        self.ratio = f"{value:.2f}"
        self.met = ok


# -- processes ---------------------------------------------------------------------------------


# the cluster library already walks /proc: its process table helpers serve here too
_proc_fields = cluster_lib._proc_stat  # fields of /proc/PID/stat after the name (0: state, 1: ppid)


def _pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def tree(root: int) -> List[int]:
    """root and all its live descendants."""
    return [root] + sorted(cluster_lib._descendants({root}, cluster_lib._parents()))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def rss_kb(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # gone, or a zombie


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ")


def cpu_seconds(root: int) -> float:
    """CPU used so far by root and its descendants: each live process's own time
    plus that of the children it has reaped (utime, stime, cutime, cstime)."""
    total = 0
    for pid in tree(root):
        st = _proc_fields(pid)
        if st:
            total += sum(int(x) for x in st[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU of this process's reaped children and their descendants."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def forked_cpu() -> float:
    """CPU of the parallels this process's fork server forked and reaped (0 before it starts)."""
    from pegpar import forkserver, runtime

    srv = forkserver._servers.get(runtime.parallel_script())
    fields = _proc_fields(srv.process.pid) if srv is not None and srv.alive() else None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


# -- the bench ---------------------------------------------------------------------------------


@dataclass
class Timed:
    """One finished command: wall time, CPU of its whole process tree, wall-clock span."""

    wall: float
    cpu: float
    began: float
    ended: float
    said: str  # the last line on stderr (pegpar's summary)


class Bench:
    def __init__(self, cfg: Config, root: str, cluster: cluster_lib.Cluster):
        self.cfg = cfg
        self.root = root
        self.cluster = cluster
        self.env = {k: v for k, v in os.environ.items()
                    if not (k == "PARALLEL" or k.startswith(("PARALLEL_", "PEGPAR_")))}
        self.env.pop("SSH_AUTH_SOCK", None)
        self.env["NO_COLOR"] = "1"
        self.par_env = dict(self.env, PARALLEL_HOME=self.folder("parallel-home"))
        self.wrapper = self._write_wrapper()
        self.workdirs: List[str] = []
        self.last: Optional[Timed] = None
        self._warm = False
        self.handovers: Optional[Tuple[Stat, Stat]] = None
        self._waves: Dict[bool, Tuple[Stat, Stat]] = {}

    def folder(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _write_wrapper(self) -> str:
        """The expert's ControlMaster: an ssh wrapper whose path has no spaces (notes F6)."""
        cm = self.folder("cm")
        path = os.path.join(self.root, "ssh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec ssh -F {self.cluster.ssh_config} -o ControlMaster=auto "
                    f"-o ControlPath={cm}/%C -o ControlPersist=yes \"$@\"\n")
        os.chmod(path, 0o700)
        return path

    def workdir(self, name: str, hosts: Optional[str] = None) -> str:
        path = self.folder(name)
        if hosts is not None:
            write_private(os.path.join(path, "hosts.yaml"), hosts)
        if path not in self.workdirs:
            self.workdirs.append(path)
        return path

    def remote_workdir(self, hosts: str) -> str:
        """The one work dir of every pegpar run on the cluster, so that all of them
        find pegpar's ControlMasters up (its run directory is keyed by the work dir),
        as in a long-lived setup; the expert's wrapper is warmed at the same time."""
        wd = self.workdir("remote", "".join(f"- {n}\n" for n in self.cluster.nodes))
        if not self._warm:
            fresh_queue(wd, ["true"] * len(self.cluster.nodes))
            self.pegpar(["q"] + self.remote_args(), wd, "pegpar q (warm-up)")
            self.warm_wrapper()
            self._warm = True
        write_private(os.path.join(wd, "hosts.yaml"), hosts)
        return wd

    # -- running things
    def run(self, argv: List[str], cwd: str, env: Dict[str, str], what: str,
            stdin: Optional[str] = None) -> float:
        """Run to the end and return the wall time; `self.last` has the details.
        `stdin`: a file to read as standard input (else none)."""
        cpu0, began, t0 = children_cpu(), time.time(), time.perf_counter()
        with open(stdin or os.devnull, "rb") as given:
            p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=given,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = p.communicate(timeout=self.cfg.hang_guard)
        except subprocess.TimeoutExpired:
            where = stuck_at(p.pid)
            for pid in tree(p.pid):  # pegpar's children run in sessions of their own
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            p.communicate()
            raise BenchError(f"{what} did not finish within {self.cfg.hang_guard:g} s{where}") from None
        wall = time.perf_counter() - t0
        lines = [x for x in err.decode("utf-8", "replace").splitlines() if x.strip()]
        said = lines[-1] if lines else "(no message)"
        self.last = Timed(wall, children_cpu() - cpu0, began, time.time(), said)
        if p.returncode != 0:
            raise BenchError(f"{what} exited {p.returncode}: {said}")
        return wall

    def pegpar(self, args: List[str], cwd: str, what: str = "pegpar", stdin: Optional[str] = None) -> float:
        return self.run(PEGPAR + args, cwd, self.env, what, stdin)

    def parallel(self, args: List[str], cwd: str, stdin: Optional[str] = None) -> float:
        return self.run(["perl", PARALLEL] + args, cwd, self.par_env, "GNU parallel", stdin)

    def remote_args(self) -> List[str]:
        return ["--ssh-config", self.cluster.ssh_config]

    def warm_wrapper(self) -> None:
        for node in self.cluster.nodes:
            self.run([self.wrapper, node, "true"], self.root, self.env, f"ssh {node}")

    def wave_cost(self, remote: bool) -> Tuple[Stat, Stat]:
        """Wall time and CPU of one GNU parallel invocation for a single `true`
        job, started by pegpar's own backend.start_wave: what every dispatch
        turn pays per host."""
        if remote in self._waves:
            return self._waves[remote]
        from pegpar import backend, runtime
        from pegpar.expand import SubNode

        wd = self.workdir("wave-remote" if remote else "wave-local")
        rt = runtime.runtime(os.path.join(wd, ".pegpar"), self.cluster.ssh_config if remote else None)
        node = SubNode("node-1", "node-1", (), False) if remote else SubNode("localhost/1", "localhost", (), True)
        walls, cpus = [], []
        for i in range(self.cfg.wave_reps + 1):  # the first one starts the ControlMaster: not counted
            out = os.path.join(rt.logs_dir, f"{i + 1}.bench")
            # the wave's parallel is the fork server's child: its CPU counts there once it is reaped
            cpu0, t0 = forked_cpu(), time.perf_counter()
            wave = backend.start_wave(rt, [backend.Running(i + 1, node, "true", out, out + ".err")])
            try:
                wave.process.wait(timeout=self.cfg.hang_guard)
            except subprocess.TimeoutExpired:
                proc.signal_group(wave.process, signal.SIGKILL)
                raise BenchError("a single-job wave did not finish") from None
            wall, cpu = time.perf_counter() - t0, forked_cpu() - cpu0
            recs, messages = wave.new_records(), wave.messages()
            wave.cleanup()
            if len(recs) != 1 or not recs[0][1].ok:
                raise BenchError(f"a single-job wave failed: {messages}")
            if i:
                walls.append(wall)
                cpus.append(cpu)
        self._waves[remote] = (stat(walls), stat(cpus))
        return self._waves[remote]

    def cleanup(self) -> None:
        """pegpar's run directories of our work dirs (its ssh masters die with the cluster)."""
        from pegpar import runtime

        for path in self.workdirs:
            state = os.path.join(path, ".pegpar")
            if os.path.isdir(state):
                try:
                    shutil.rmtree(runtime.runtime(state, None).run_dir, ignore_errors=True)
                except Exception:  # cleaning up must not hide the results
                    pass


def write_private(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # pegpar refuses queue files others can write


def fresh_queue(workdir: str, commands: Sequence[str]) -> None:
    """queue.yaml holding `commands`; the previous run's joblog and consumed.yaml go."""
    write_private(os.path.join(workdir, "queue.yaml"), "".join(f"- {c}\n" for c in commands))
    for path in (os.path.join(workdir, "consumed.yaml"), main_joblog(workdir)):
        if os.path.exists(path):
            os.unlink(path)


def long_queue(path: str, entries: int) -> None:
    write_private(path, "".join(f"- python train.py --lr 0.{i % 10} --seed {i}\n" for i in range(entries)))


def main_joblog(workdir: str) -> str:
    return os.path.join(workdir, ".pegpar", "joblog")


def check_records(path: str, expected: int, what: str, said: str = "") -> List[joblog.Record]:
    recs = joblog.read(path)
    bad = [r for r in recs if not r.ok]
    if len(recs) != expected or bad:
        seqs = {r.seq for r in recs}
        missing = [i for i in range(1, max(seqs | {expected}) + 1) if i not in seqs][:10]
        raise BenchError(f"{what}: {len(recs)} of {expected} jobs in the joblog, {len(bad)} failed"
                         + (f", seqs missing: {missing}" if missing else "")
                         + (f"; it said: {said}" if said else ""))
    return recs


def alternate(reps: int, *runs: Callable[[], float]) -> List[List[float]]:
    """Run each measurement `reps` times, interleaved: a slow moment hits all of them."""
    samples: List[List[float]] = [[] for _ in runs]
    for _ in range(reps):
        for i, run in enumerate(runs):
            samples[i].append(run())
    return samples


# -- what the joblogs and pegpar's journal say --------------------------------------------------


def gaps(recs: Sequence[joblog.Record], slots: int = 1) -> List[float]:
    """Idle time of each slot between two of its jobs: the next job's start minus
    the end of the one before (both as GNU parallel measured them).

    pegpar's joblog names the sub-node (one slot each); raw GNU parallel's names
    only the host, so with `slots` > 1 each job goes to the host's slot that
    freed last before it started (a free slot is what lets parallel start it)."""
    by_host: Dict[str, List[joblog.Record]] = {}
    for r in recs:
        by_host.setdefault(r.host, []).append(r)
    out = []
    for rs in by_host.values():
        rs.sort(key=lambda r: r.start)
        ends: List[float] = []
        for r in rs:
            if len(ends) < slots:
                ends.append(r.start + r.runtime)
                continue
            freed = [e for e in ends if e <= r.start]
            i = ends.index(max(freed) if freed else min(ends))
            out.append(r.start - ends[i])
            ends[i] = r.start + r.runtime
    return out


@dataclass(frozen=True)
class Breakdown:
    """A pegpar run seen through its journal (when each job was reserved) and its
    joblog (when GNU parallel started and ended it)."""

    jobs: int
    notice: Stat  # a sub-node's job ends -> pegpar reserves its next job
    handover: Stat  # reserved -> GNU parallel starts the job
    handover_next: Stat  # the same, for jobs after the first on their sub-node (its parallel already running)
    first_reserved: float
    records: Tuple[joblog.Record, ...]
    run_started: Optional[float]  # the controller's start, before it checks the hosts


def breakdown(workdir: str) -> Optional[Breakdown]:
    """None when the journal is not there (pegpar's private file: best effort)."""
    reserved: Dict[int, Tuple[float, str]] = {}
    run_started = None
    for line in _read(os.path.join(workdir, ".pegpar", "journal")).splitlines():
        try:
            rec = json.loads(line)
            if rec.get("event") == "run":
                run_started = float(rec["started"])
            if rec.get("event") == "dispatch":
                reserved[int(rec["seq"])] = (float(rec["start"]), str(rec["host"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    recs = [r for r in joblog.read(main_joblog(workdir)) if r.seq in reserved]
    if not recs:
        return None
    notice, handover_next = [], []
    by_node: Dict[str, List[joblog.Record]] = {}
    for r in recs:
        by_node.setdefault(r.host, []).append(r)
    for rs in by_node.values():
        rs.sort(key=lambda r: r.start)
        notice += [reserved[b.seq][0] - (a.start + a.runtime) for a, b in zip(rs, rs[1:])]
        handover_next += [b.start - reserved[b.seq][0] for b in rs[1:]]
    handover = [r.start - reserved[r.seq][0] for r in recs]
    return Breakdown(len(recs), stat(notice or [0.0]), stat(handover), stat(handover_next or [0.0]),
                     min(t for t, _ in reserved.values()), tuple(recs), run_started)


def handover(b: Bench, ahead: bool) -> float:
    """Seconds from handing one job to a GNU parallel to its start (local, pegpar's
    wave options). `ahead`: the parallel was started beforehand and waits, idle, on
    its input pipe (-0 -N3 reads command, tag, id per job), so only the hand-over
    is timed; input complete at EOF keeps joblog lines live (notes F2)."""
    folder = b.folder("handover")
    log = os.path.join(folder, "joblog")
    if os.path.exists(log):
        os.unlink(log)
    argv = ["perl", PARALLEL, "-0", "-N3", "--joblog", log, "-j", "1",
            "--results", os.path.join(folder, "{2}"), "env", "PEGPAR_JOB={3}", "sh", "-c", "{1}"]
    env = dict(b.par_env, PARALLEL_SHELL="/bin/sh")

    def spawn() -> subprocess.Popen:
        return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    p = spawn() if ahead else None
    if ahead:
        time.sleep(1.0)  # compiled and waiting
    began = time.time()
    p = p or spawn()
    p.stdin.write(b"true\0bench\0bench-1\0")
    p.stdin.close()
    try:
        p.wait(timeout=b.cfg.hang_guard)
    except subprocess.TimeoutExpired:
        p.kill()
        raise BenchError("GNU parallel did not finish a single job") from None
    recs = joblog.read(log)
    if len(recs) != 1 or not recs[0].ok:
        raise BenchError("GNU parallel did not run the handed-over job")
    return recs[0].start - began


def parallels_started(b: Bench, args: List[str], cwd: str) -> int:
    """How many GNU parallel processes pegpar starts in one (untimed) run: its
    waves, and those started ahead of need, seen by sampling /proc."""
    seen: set = set()
    looked: set = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in sorted(_pids()):
                if pid not in looked:
                    looked.add(pid)
                    line = cmdline(pid)
                    fields = _proc_fields(pid)
                    # the fork server's children (its grandchildren are parallel's own forks)
                    if FORK_SERVER in line and fields and _is_fork_server(int(fields[1])):
                        seen.add(pid)
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        b.pegpar(args, cwd, "pegpar (counting its GNU parallels)")
    finally:
        done.set()
        watcher.join()
    return len(seen)


FORK_SERVER = "-MPegparForkServer"


def _is_fork_server(pid: int) -> bool:
    """pegpar's fork server: its command line, and a parent that is not one
    (each wave's parallel, forked from it, shows the same command line)."""
    fields = _proc_fields(pid)
    return FORK_SERVER in cmdline(pid) and bool(fields) and FORK_SERVER not in cmdline(int(fields[1]))


def dispatch_why(b: Bench, bd: Optional[Breakdown], remote: bool, cpu: Optional[Tuple[Stat, Stat]] = None,
                 profile: str = "", run_wall: Optional[float] = None, parallels: int = 0) -> str:
    """What a sub-node's wait between two jobs is made of, with the figures that show it."""
    wall, wcpu = b.wave_cost(remote)
    cores = os.cpu_count() or 1
    text = ("pegpar keeps one GNU parallel per host open while that host's sub-nodes keep getting jobs "
            "(a job reports its end, pegpar pops the queue and writes the next job to that parallel). ")
    if parallels and bd is not None:
        text += f"A run of the same {bd.jobs} jobs started {parallels} GNU parallel processes in all. "
    if bd is not None:
        text += ("A sub-node's wait splits into "
                 f"{fmt(bd.notice.median, 's')} from the end of its job to pegpar reserving the next "
                 f"and {fmt(bd.handover.median, 's')} from that reservation to GNU parallel starting the "
                 f"job (medians). ")
    text += (f"Each GNU parallel costs its start-up (forked from pegpar's fork server, which compiled "
             f"parallel once: its options and its first job): one "
             f"{'remote' if remote else 'local'} single-job wave started from scratch by pegpar's backend "
             f"takes {fmt(wall.median, 's')} of wall time and {fmt(wcpu.median, 's')} of CPU here")
    if parallels and run_wall:
        used = parallels * wcpu.median
        text += (f"; {parallels} x {fmt(wcpu.median, 's')} = {used:.1f} CPU-s in a {run_wall:.0f} s run, "
                 f"{used / run_wall:.2f} of the {cores} cores")
    text += "."
    if cpu is not None:
        text += (f" CPU per job over a whole run, everything included: {fmt(cpu[0].median, 's')} under pegpar, "
                 f"{fmt(cpu[1].median, 's')} under GNU parallel alone.")
    if b.handovers is None:
        fresh, ahead = alternate(max(3, b.cfg.wave_reps // 2), lambda: handover(b, False), lambda: handover(b, True))
        b.handovers = (stat(fresh), stat(ahead))
    fresh, ahead = b.handovers
    text += (f" The floor: a local job handed to a GNU parallel already waiting on its input starts "
             f"{fmt(ahead.median, 's')} later, to one started on the spot {fmt(fresh.median, 's')} later.")
    if profile:
        text += f" {profile}"
    return text


def stuck_at(pid: int) -> str:
    """Where a hung pegpar is, by the innermost line of pegpar's code in a
    `py-spy dump` (when py-spy is there)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return ""
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in dump.splitlines():
        m = re.match(r"\s+(\S+) \((pegpar/[^:]+):(\d+)\)", line)
        if m:
            return f"; it was at {_source(f'{m.group(1)} ({m.group(2)}:{m.group(3)})')}"
    return ""


def profile(b: Bench, args: List[str], cwd: str) -> str:
    """Where pegpar's main thread (its loop) spends its wall time during one
    run, by the innermost pegpar line of each py-spy sample (waiting
    included); empty without py-spy (it is on PyPI) or where it may not trace."""
    spy = shutil.which("py-spy")
    if spy is None or b.cfg.quick:
        return ""
    raw = os.path.join(b.root, "profile.txt")
    try:
        b.run([spy, "record", "--idle", "-r", "200", "-f", "raw", "-o", raw, "--"] + PEGPAR + args,
              cwd, b.env, "py-spy")
    except BenchError:
        return ""
    return profile_summary(_read(raw))


def profile_summary(raw: str) -> str:
    """The four pegpar lines where py-spy's raw samples (`frame;frame N`)
    found the main thread most often; other threads' samples (rooted in
    Thread._bootstrap) do not count."""
    counts: Dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or stack.startswith("Thread._bootstrap"):
            continue  # another thread's: the file closer's and the input reader's waits
        total += int(n)
        frames = [f for f in stack.split(";") if "(pegpar/" in f]
        key = frames[-1] if frames else "outside pegpar's code"
        counts[key] = counts.get(key, 0) + int(n)
    if not total:
        return ""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
    return ("Where pegpar's main thread spends that run's wall time (py-spy, waiting included, by the "
            "innermost line of pegpar's code): " + ", ".join(f"{_source(k)} {v / total:.0%}" for k, v in top) + ".")


def _source(frame: str) -> str:
    """`func (pegpar/x.py:12)` -> `func (pegpar/x.py:12: the line's code)`."""
    m = re.match(r"(.*) \((pegpar/[^:]+):(\d+)\)$", frame)
    if not m:
        return frame
    code = linecache.getline(os.path.join(ROOT, m.group(2)), int(m.group(3))).strip()
    return f"{m.group(1)} ({m.group(2)}:{m.group(3)}: `{code}`)" if code else frame


# -- the figures -------------------------------------------------------------------------------


def throughput(b: Bench, row: Row, *, hosts: Optional[str], pegpar_args: List[str],
               parallel_args: List[str], slots: int, name: str, minimum: float,
               fleet: Optional[Dict[str, int]] = None) -> None:
    """jobs/s of `true` jobs, pegpar against raw GNU parallel. `fleet` (host
    -> sub-nodes, remote rows): measure free_controller too when missed."""
    n = b.cfg.jobs
    wd = b.remote_workdir(hosts) if hosts is not None else b.workdir(name)
    ref_dir = b.folder(name + "-ref")
    ref_log = os.path.join(ref_dir, "joblog")
    last: Dict[str, List[joblog.Record]] = {}
    cpu: Dict[str, List[float]] = {"pegpar": [], "ref": []}

    def pegpar_run(count: int = n) -> float:
        fresh_queue(wd, ["true"] * count)
        wall = b.pegpar(["q"] + pegpar_args, wd, "pegpar q")
        cpu["pegpar"].append(b.last.cpu / count)
        last["pegpar"] = check_records(main_joblog(wd), count, "pegpar", b.last.said)
        return wall

    def parallel_run(count: int = n) -> float:
        cmds = os.path.join(ref_dir, f"cmds-{count}")
        write_private(cmds, "true\n" * count)
        if os.path.exists(ref_log):
            os.unlink(ref_log)
        wall = b.parallel(parallel_args + ["--joblog", ref_log, "-a", cmds], ref_dir)
        cpu["ref"].append(b.last.cpu / count)
        last["ref"] = check_records(ref_log, count, "GNU parallel")
        return wall

    pegpar_run(4)  # warm-up (the page cache, compiled modules); not counted
    parallel_run(4)
    for k in cpu:
        cpu[k].clear()
    peg, ref = alternate(b.cfg.reps, pegpar_run, parallel_run)
    p, r = stat([n / w for w in peg]), stat([n / w for w in ref])
    row.pegpar = fmt_stat(p, "jobs/s")
    row.reference = fmt_stat(r, "jobs/s")
    row.compare(p.median / r.median, p.median / r.median >= minimum)
    pg, rg = stat(gaps(last["pegpar"])), stat(gaps(last["ref"], slots))
    prt = stat([x.runtime for x in last["pegpar"]])
    rrt = stat([x.runtime for x in last["ref"]])
    subnodes = len({x.host for x in last["pegpar"]})
    row.notes.append(
        f"last runs' joblogs: between the end of a job and the start of the next on the same "
        f"sub-node (slot), {fmt(pg.median, 's')} pass under pegpar (p95 {fmt(pg.pct(95), 's')}) and "
        f"{fmt(rg.median, 's')} under GNU parallel (p95 {fmt(rg.pct(95), 's')}); a job itself takes "
        f"{fmt(prt.median, 's')} under pegpar, {fmt(rrt.median, 's')} under GNU parallel (JobRuntime, "
        f"median). {subnodes} sub-nodes / (job + wait) = {subnodes / (prt.median + pg.median):.1f} jobs/s.")
    if row.met is False:
        bd = breakdown(wd)
        fresh_queue(wd, ["true"] * n)
        started = parallels_started(b, ["q"] + pegpar_args, wd)
        fresh_queue(wd, ["true"] * n)
        row.why.append(dispatch_why(b, bd, hosts is not None, (stat(cpu["pegpar"]), stat(cpu["ref"])),
                                    profile(b, ["q"] + pegpar_args, wd), run_wall=peg[-1], parallels=started))
        row.why.append(cpu_bound(n, hosts is not None, peg, ref, cpu))
        if hosts is None:
            row.why.append(local_cpu_split(b, wd, n, (stat(cpu["pegpar"]).median, stat(cpu["ref"]).median)))
        if fleet is not None:
            row.why.append(controller_split(b, fleet, n, p.median / r.median, parallel_run))


def cpu_bound(n: int, remote: bool, peg: List[float], ref: List[float], cpu: Dict[str, List[float]]) -> str:
    """How much of the machine the runs used (their process trees' CPU over
    wall time and cores): whether the rate is bound by CPU."""
    cores = os.cpu_count() or 1
    used = {side: stat([c * n / w / cores for c, w in zip(cpu[side], walls)])
            for side, walls in (("pegpar", peg), ("ref", ref))}
    sshd = "; the nodes' sshd come on top" if remote else ""
    text = (f"The runs kept the machine's {cores} cores {used['pegpar'].median:.0%} busy under pegpar and "
            f"{used['ref'].median:.0%} under GNU parallel alone (each tool's process tree: the tool, its GNU "
            f"parallels, ssh and the jobs{sshd}). CPU per job: {fmt(stat(cpu['pegpar']).median, 's')} "
            f"against {fmt(stat(cpu['ref']).median, 's')}"
            + (": with the cores this busy, the rate follows it." if used["pegpar"].median >= 0.8 else "."))
    return text


def local_cpu_split(b: Bench, wd: str, n: int, cpu: Tuple[float, float]) -> str:
    """Where the CPU pegpar spends above GNU parallel's goes in a local run of
    n `true` jobs, part by part, each measured apart and alternated: its start
    (one-job runs of both tools), its own process per job (own_cpu), and its
    job guard's shell (job_line_cpu with and without it). `cpu`: CPU per job
    of the row's runs, pegpar's and GNU parallel's."""
    folder = b.folder("cpu-split")
    runs: Dict[str, List[float]] = {k: [] for k in ("wall", "cpu", "ref_wall", "ref_cpu", "own1", "own", "line",
                                                    "bare")}
    for _ in range(b.cfg.reps + 2):
        fresh_queue(wd, ["true"])
        runs["wall"].append(b.pegpar(["q", "-j", "8"], wd, "pegpar q"))
        runs["cpu"].append(b.last.cpu)
        runs["ref_wall"].append(b.parallel(["-j8", "true", ":::", "1"], folder))
        runs["ref_cpu"].append(b.last.cpu)
        fresh_queue(wd, ["true"])
        runs["own1"].append(own_cpu(b, ["q", "-j", "8"], wd, None))
        fresh_queue(wd, ["true"] * n)
        runs["own"].append(own_cpu(b, ["q", "-j", "8"], wd, None))
        runs["line"].append(job_line_cpu(b, folder, n))
        runs["bare"].append(job_line_cpu(b, folder, n, guard=False))
    m = {k: stat(v).median for k, v in runs.items()}
    start, own, guard = m["cpu"] - m["ref_cpu"], (m["own"] - m["own1"]) / (n - 1), m["line"] - m["bare"]
    parts, diff = start / n + own + guard, cpu[0] - cpu[1]
    summed = ("more than that difference: a wave's GNU parallel waits on its input between jobs, where GNU "
              "parallel alone polls for its jobs' ends" if parts > diff else
              f"{fmt(parts, 's')} of that difference")
    return (f"where pegpar's CPU goes, part by part ({len(runs['wall'])} runs of each, alternated; medians). Its "
            f"start: a one-job run takes {fmt(m['wall'], 's')} of wall time and {fmt(m['cpu'], 's')} of CPU under "
            f"pegpar, {fmt(m['ref_wall'], 's')} and {fmt(m['ref_cpu'], 's')} under GNU parallel, so "
            f"{fmt(start, 's')} more (the interpreter and its imports, the fork server compiling GNU parallel, "
            f"the state directory): {fmt(start / n, 's')} per job of this row's {n}. Its own process beyond its "
            f"start: {fmt(own, 's')} per job (its loop, the pop, the journal, the output files). Each job's "
            f"guard shell: {fmt(guard, 's')} per job (GNU parallel given a local wave's command line, with and "
            f"without the guard: {fmt(m['line'], 's')} and {fmt(m['bare'], 's')} per job). Against the "
            f"{fmt(diff, 's')} per job by which pegpar's runs above cost more than GNU parallel's, these parts add "
            f"up to {summed}. The guard is a process of its own so that a kill is never missed: it carries the "
            "job's kill mark from its start, so either the kill finds it or it finds the kill's mark.")


def controller_split(b: Bench, fleet: Dict[str, int], n: int, own: float, parallel_run: Callable[[], float]) -> str:
    """pegpar's shortfall split between its executor and its controller: its
    waves under free_controller (alone, with the durable pop, with that pop
    unsynced), each alternated with GNU parallel alone (`parallel_run`).
    `fleet`: host -> sub-nodes; `own`: pegpar's rate as a multiple of GNU
    parallel's in the row's runs."""
    free_controller(b, fleet, sum(fleet.values()))  # warm-up: its ssh masters start; not counted
    free, popping, unsynced, again = alternate(
        b.cfg.reps, lambda: free_controller(b, fleet, n), lambda: free_controller(b, fleet, n, "durable"),
        lambda: free_controller(b, fleet, n, "unsynced"), parallel_run)
    f, fp, fu, g = (stat([n / w for w in walls]) for walls in (free, popping, unsynced, again))
    ratio = f.median / g.median
    return (f"pegpar's waves under a controller that costs nothing (a loop that hands a sub-node its next "
            f"job the moment its end report appears: no queue file, journal or placement) run "
            f"{fmt(f.median, 'jobs/s')} against {fmt(g.median, 'jobs/s')} for GNU parallel alone in the same "
            f"runs ({ratio:.2f}x); pegpar itself ran at {own:.2f}x in the runs above" + _split(ratio, own)
            + f" The same loop taking each job from a queue file first, as pegpar does (its durable pop: "
            f"consumed.yaml, the new queue file and a journal record, each fsynced, then the rename), runs "
            f"{fmt(fp.median, 'jobs/s')} ({fp.median / g.median:.2f}x); with its fsyncs skipped, "
            f"{fmt(fu.median, 'jobs/s')} ({fu.median / g.median:.2f}x).")


def free_controller(b: Bench, hosts: Dict[str, int], n: int, pop: Optional[str] = None) -> float:
    """Wall time of n `true` jobs run by pegpar's own waves (one open GNU
    parallel per host, started and fed by pegpar's backend, each job with
    its guard, output files and end report) under a controller that costs
    nothing: a loop that hands a sub-node its next job the moment its end
    report appears, with no queue file, journal or placement. What is left
    between it and GNU parallel alone is the executor's, not the controller's.
    `hosts`: host -> sub-nodes. `pop`: each job is first taken from a queue
    file as pegpar takes it (QueueFile.take: consumed.yaml, the new queue
    file, and a journal record synced before the file is replaced), so
    that the difference is the cost of that durable pop: "durable"; the
    same with every fsync of this process skipped: "unsynced"."""
    from pegpar import backend, durable, runtime
    from pegpar.expand import SubNode
    from pegpar.queue import QueueFile

    wd = b.workdir("free-controller")
    rt = runtime.runtime(os.path.join(wd, ".pegpar"), b.cluster.ssh_config)
    fresh_queue(wd, ["true"] * n)
    queue = QueueFile(os.path.join(wd, "queue.yaml"))
    journal = os.path.join(wd, "journal")
    waves: List[backend.Wave] = []
    handed = 0  # jobs given to the waves so far; the last one's seq

    def job(node: SubNode) -> backend.Running:
        nonlocal handed
        handed += 1
        seq = handed
        if pop is not None:
            def note(pending) -> None:  # the controller's journal record, synced
                durable.append_durably(journal, json.dumps({"seq": seq, "pending": pending.file}).encode() + b"\n")

            taken = queue.take(1, lambda _: None, note)
            if taken is None or len(taken[0]) != 1:
                raise BenchError(f"the free controller could not pop its job: {taken}")
        out = os.path.join(rt.logs_dir, backend.log_name(seq, node))
        return backend.Running(seq, node, "true", out, out + ".err")

    fsync = os.fsync
    if pop == "unsynced":
        os.fsync = lambda fd: None  # this process only (the bench's), for this measurement only
    t0 = time.perf_counter()
    try:
        for host, slots in hosts.items():
            node = SubNode(host, host, (), False)
            first = [job(node) for _ in range(min(slots, n - handed))]
            if first:
                waves.append(backend.start_wave(rt, first, slots=slots, keep_open=True))
        ended, deadline = 0, time.time() + b.cfg.hang_guard
        while ended < n:
            if time.time() > deadline:
                raise BenchError("the free controller's jobs did not end")
            quiet = True
            for wave in waves:
                for running, _ in wave.new_ends():
                    ended, quiet = ended + 1, False
                    if handed < n:
                        wave.extend(rt, [job(running.node)])
            if quiet:
                time.sleep(0.0005)
        wall = time.perf_counter() - t0
        for wave in waves:
            wave.close()
        for wave in waves:
            wave.process.wait(timeout=b.cfg.hang_guard)
        recs = [rec for wave in waves for _, rec in wave.new_records()]
    finally:
        os.fsync = fsync
        for wave in waves:
            if wave.process.poll() is None:
                proc.signal_group(wave.process, signal.SIGKILL)
            wave.cleanup()
        shutil.rmtree(rt.logs_dir, ignore_errors=True)
        os.makedirs(rt.logs_dir, mode=0o700, exist_ok=True)
        if os.path.exists(journal):
            os.unlink(journal)
    if len(recs) != n or not all(rec.ok for rec in recs):
        raise BenchError(f"the free controller ran {len(recs)} of {n} jobs, {sum(not r.ok for r in recs)} failed")
    return wall


CONTROLLER = "the pop and its fsyncs, the journal, placement, the loop"


def _split(ratio: float, own: float) -> str:
    """Where pegpar's shortfall goes, from its executor's rate alone (`ratio`)
    and its own (`own`), both as multiples of GNU parallel's."""
    if ratio < own:
        return ": the executor alone was no faster here (start-up and noise)."
    if ratio >= 1.0:
        return f": its executor alone outruns GNU parallel; what is missing is its controller's ({CONTROLLER})."
    return (f". Of pegpar's {100 * (1 - own):.0f} points below GNU parallel's rate, {100 * (1 - ratio):.0f} are "
            f"then its executor's (one GNU parallel per host, which lets pegpar place each job; each job's guard, "
            f"output files and end report) and {100 * (ratio - own):.0f} its controller's ({CONTROLLER}).")


def row_remote_throughput(b: Bench, row: Row) -> None:
    throughput(b, row, hosts="- hostname: [node-1, node-2]\n  slot: [1, 2]\n",
               pegpar_args=b.remote_args(),
               parallel_args=["-S", "2/node-1,2/node-2", "--ssh", b.wrapper],
               slots=2, name="throughput-remote", minimum=1.0, fleet={"node-1": 2, "node-2": 2})


def row_local_throughput(b: Bench, row: Row) -> None:
    throughput(b, row, hosts=None, pegpar_args=["-j", "8"], parallel_args=["-j8"],
               slots=8, name="throughput-local", minimum=0.8)


def input_throughput(b: Bench, row: Row, *, remote: bool, from_stdin: bool, wall_target: float) -> None:
    """`pegpar q -- true` on input (stdin lines or `:::` values), wall time and
    CPU per job, against GNU parallel given the same arguments and input."""
    n = b.cfg.jobs if b.cfg.quick else 500
    name = f"input-{'remote' if remote else 'local'}-{'stdin' if from_stdin else 'args'}"
    nodes = b.cluster.nodes
    # remote: the same four job slots on both sides, two sub-nodes on each of two hosts
    wd = b.remote_workdir(f"- hostname: [{nodes[0]}, {nodes[1]}]\n  slot: [1, 2]\n") if remote else b.workdir(name)
    ref_dir = b.folder(name + "-ref")
    values = os.path.join(ref_dir, "values")
    write_private(values, "".join(f"{i}\n" for i in range(1, n + 1)))
    args = ["true"] + ([] if from_stdin else [":::"] + [str(i) for i in range(1, n + 1)])
    pegpar_args = b.remote_args() if remote else ["-j", "8"]
    parallel_args = ["-S", ",".join(f"2/{x}" for x in nodes[:2]), "--ssh", b.wrapper] if remote else ["-j8"]
    joblogs = {"pegpar": os.path.join(wd, "input-joblog"), "ref": os.path.join(ref_dir, "joblog")}
    cpu: Dict[str, List[float]] = {"pegpar": [], "ref": []}

    def measured(side: str, run: Callable[[str], float]) -> float:
        if os.path.exists(joblogs[side]):
            os.unlink(joblogs[side])
        wall = run(joblogs[side])
        cpu[side].append(b.last.cpu / n)
        check_records(joblogs[side], n, side, b.last.said)
        return wall

    def pegpar_run() -> float:
        return measured("pegpar", lambda log: b.pegpar(["q", *pegpar_args, "--joblog", log, "--", *args], wd,
                                                        "pegpar q --", values if from_stdin else None))

    def parallel_run() -> float:
        return measured("ref", lambda log: b.parallel([*parallel_args, "--joblog", log, *args], ref_dir,
                                                      values if from_stdin else None))

    pegpar_run()  # warm-up, not counted
    parallel_run()
    for k in cpu:
        cpu[k].clear()
    peg, ref = alternate(b.cfg.reps, pegpar_run, parallel_run)
    p, r = stat(peg), stat(ref)
    pc, rc = stat(cpu["pegpar"]), stat(cpu["ref"])
    row.pegpar = fmt_stat(p, "s")
    row.reference = fmt_stat(r, "s")
    wall_ratio, cpu_ratio = p.median / r.median, pc.median / rc.median
    row.compare(wall_ratio, wall_ratio <= wall_target and cpu_ratio <= 1.3)
    row.notes.append(f"CPU per job: pegpar {fmt(pc.median, 's')}, GNU parallel {fmt(rc.median, 's')} "
                     f"(ratio {cpu_ratio:.2f}, target <= 1.3); {n} jobs per run.")
    if row.met is False:
        own = own_cpu(b, ["q", *pegpar_args, "--joblog", joblogs["pegpar"], "--", *args], wd,
                      values if from_stdin else None) / n
        under = pc.median - own
        line = "" if remote else (
            f" GNU parallel alone given pegpar's job line (the job's `sh -c` under the kill guard, "
            f"its output files, the report of its end: one shell more per job than `parallel true`) "
            f"takes {fmt(job_line_cpu(b, ref_dir, n), 's')} per job.")
        row.why.append(f"measured in one more run: pegpar's own process takes {fmt(own, 's')} of CPU per job, "
                       f"the GNU parallel it runs the jobs with (and the jobs) {fmt(under, 's')}, against "
                       f"{fmt(rc.median, 's')} for GNU parallel alone.{line} "
                       + profile(b, ["q", *pegpar_args, "--", "true", ":::", *map(str, range(1, n + 1))], wd))


def job_line_cpu(b: Bench, folder: str, n: int, guard: bool = True) -> float:
    """CPU per job of GNU parallel running n `true` jobs with the command line
    pegpar gives a local wave (backend.LOCAL_JOB), as pegpar starts it;
    `guard=False`: the same line with the command's `sh -c` in place of the
    job guard's."""
    from pegpar import backend
    from pegpar.remote import JOB_GUARD

    logs = b.folder(os.path.join(folder, "job-line-logs"))
    records = os.path.join(folder, "job-line-input")
    write_private(records, "".join(f"true\t{i}.x\tbench-{i}\0" for i in range(1, n + 1)))
    line = backend.local_job_line(logs)
    if not guard:
        bare = line.replace(f"sh -c {shlex.quote(JOB_GUARD)} ", "sh -c ", 1)
        if bare == line:
            raise BenchError("the local wave's command line no longer runs the job guard as `sh -c GUARD`")
        line = bare
    env = dict(b.par_env, PEGPAR_KILLED=os.path.join(folder, "killed"), PEGPAR_DONE=os.path.join(folder, "done"))
    cpu0 = children_cpu()
    with open(records, "rb") as stdin:
        subprocess.run(["perl", PARALLEL, "-0", "--colsep", "\t", "--trim", "n", "-j8", "-u", "--joblog",
                        os.path.join(folder, "job-line-joblog"), line], cwd=folder, env=env, stdin=stdin,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=b.cfg.hang_guard)
    return (children_cpu() - cpu0) / n


def own_cpu(b: Bench, args: List[str], cwd: str, stdin: Optional[str]) -> float:
    """CPU seconds of pegpar's own process in one run, its children (GNU
    parallel, the jobs) left out: it reports its RUSAGE_SELF as it exits."""
    code = ("import atexit, os, resource, runpy, sys\n"
            "atexit.register(lambda: os.write(2, b'pegpar-self-cpu %f\\n' % sum("
            "resource.getrusage(resource.RUSAGE_SELF)[:2])))\n"
            "sys.argv = ['pegpar'] + sys.argv[1:]\n"
            "runpy.run_module('pegpar', run_name='__main__')\n")
    argv = [sys.executable, "-c", code, *args]
    with open(stdin or os.devnull, "rb") as given:
        p = subprocess.run(argv, cwd=cwd, env=b.env, stdin=given, capture_output=True, timeout=b.cfg.hang_guard)
    for line in p.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("pegpar-self-cpu "):
            return float(line.split()[1])
    raise BenchError(f"pegpar's own CPU time was not reported (exit {p.returncode})")


def row_input_local_stdin(b: Bench, row: Row) -> None:
    input_throughput(b, row, remote=False, from_stdin=True, wall_target=1.2)


def row_input_local_args(b: Bench, row: Row) -> None:
    input_throughput(b, row, remote=False, from_stdin=False, wall_target=1.2)


def row_input_remote_stdin(b: Bench, row: Row) -> None:
    input_throughput(b, row, remote=True, from_stdin=True, wall_target=1.0)


def _input_rss(b: Bench, argv: List[str], cwd: str, stdin_path: str, seconds: float,
               stop: int) -> Tuple[int, int]:
    """Run argv on stdin_path for at most `seconds`, then stop it with `stop`:
    (peak RSS of the process itself in kB, its RSS a quarter of the way in)."""
    with open(stdin_path, "rb") as stdin:
        p = subprocess.Popen(argv, cwd=cwd, env=b.env, stdin=stdin, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    peak = early = 0
    try:
        start = time.perf_counter()
        while p.poll() is None and time.perf_counter() - start < seconds:
            kb = rss_kb(p.pid)
            peak = max(peak, kb)
            if not early and time.perf_counter() - start >= seconds / 4:
                early = kb
            time.sleep(0.05)
    finally:
        _stop(p, stop, 60)
    return peak, early or peak


def row_input_memory(b: Bench, row: Row) -> None:
    """pegpar's own memory while a long input streams through it (it reads at
    most READ_AHEAD lines ahead), against the same command on 100 lines."""
    lines, seconds = (20_000, 3.0) if b.cfg.quick else (1_000_000, 30.0)
    wd = b.workdir("input-memory")
    ref_dir = b.folder("input-memory-ref")
    small, big = os.path.join(ref_dir, "small"), os.path.join(ref_dir, "big")
    write_private(small, "".join(f"{i}\n" for i in range(1, 101)))
    with open(big, "w") as f:
        for start in range(1, lines + 1, 100_000):
            f.write("".join(f"{i}\n" for i in range(start, min(start + 100_000, lines + 1))))
    argv = PEGPAR + ["q", "-j", "8", "--no-logs", "--no-progress", "--", "true"]
    shutil.rmtree(os.path.join(wd, ".pegpar"), ignore_errors=True)
    few, _ = _input_rss(b, argv, wd, small, 120.0, signal.SIGINT)
    shutil.rmtree(os.path.join(wd, ".pegpar"), ignore_errors=True)
    many, early = _input_rss(b, argv, wd, big, seconds, signal.SIGINT)
    ran = len(joblog.read(main_joblog(wd)))
    ref, _ = _input_rss(b, ["perl", PARALLEL, "--will-cite", "-j8", "true"], ref_dir, big, seconds, signal.SIGTERM)
    growth = (many - few) / 1024
    row.pegpar = f"{many / 1024:.1f} MB"
    row.reference = f"{few / 1024:.1f} MB"
    row.ratio = f"{growth:+.1f} MB"
    row.met = growth <= 5
    row.notes.append(f"pegpar's own process (VmRSS, sampled every 0.05 s), peak: {lines:,} stdin lines for "
                     f"{seconds:g} s ({ran:,} jobs ran, then Ctrl-C), {many / 1024:.1f} MB, of which "
                     f"{early / 1024:.1f} MB a quarter of the way in; the same command on 100 lines, "
                     f"{few / 1024:.1f} MB. GNU parallel on the same {lines:,} lines for as long: "
                     f"{ref / 1024:.1f} MB (its perl).")


def row_dispatch(b: Bench, row: Row) -> None:
    wd = b.remote_workdir("".join(f"- {n}\n" for n in b.cluster.nodes))
    n = b.cfg.latency_jobs
    fresh_queue(wd, ["sleep 0.2"] * n)
    b.pegpar(["q"] + b.remote_args(), wd, "pegpar q")
    g = stat(gaps(check_records(main_joblog(wd), n, "pegpar")))
    bd = breakdown(wd)
    b.warm_wrapper()
    rtt = stat([b.run([b.wrapper, "node-1", "true"], b.root, b.env, "ssh") for _ in range(max(5, b.cfg.reps * 3))])
    row.pegpar = f"median {fmt(g.median, 's')}, p95 {fmt(g.pct(95), 's')} ({len(g.samples)} gaps)"
    row.reference = f"median {fmt(rtt.median, 's')}, p95 {fmt(rtt.pct(95), 's')}"
    row.compare(g.median / rtt.median, g.median <= 0.25)
    # the same gaps when GNU parallel alone feeds the same sub-nodes
    ref_dir = b.folder("dispatch-ref")
    cmds = os.path.join(ref_dir, "cmds")
    write_private(cmds, "sleep 0.2\n" * n)
    ref_log = os.path.join(ref_dir, "joblog")
    b.parallel(["-S", ",".join(f"1/{x}" for x in b.cluster.nodes), "--ssh", b.wrapper,
                "--joblog", ref_log, "-a", cmds], ref_dir)
    rg = stat(gaps(check_records(ref_log, n, "GNU parallel")))
    row.notes.append(f"GNU parallel alone, one invocation fed the same {n} jobs for the same 4 hosts "
                     f"(one slot each): median {fmt(rg.median, 's')}, p95 {fmt(rg.pct(95), 's')}.")
    if row.met is False:
        fresh_queue(wd, ["sleep 0.2"] * n)
        row.why.append(dispatch_why(b, bd, remote=True, profile=profile(b, ["q"] + b.remote_args(), wd)))


def slot_gaps(recs: Sequence[joblog.Record], logs_dir: str) -> List[float]:
    """For each job that followed others on its slots: the moment it started
    minus the moment the last of its slots was freed (the end of the job that
    held it before), both as the jobs themselves printed them on the node
    (`S <time>` first, `E <time>` last, the rendered {{slots}} after `: `).
    The joblog's times would not do: GNU parallel records a job's end when it
    next reads input (F1), which is about when the next job arrives."""
    times: Dict[int, Tuple[float, float]] = {}
    for name in os.listdir(logs_dir):
        seq, _, rest = name.partition(".")
        if seq.isdigit() and not rest.endswith((".err", ".seq")):
            with open(os.path.join(logs_dir, name)) as f:
                words = f.read().split()
            times[int(seq)] = (float(words[words.index("S") + 1]), float(words[words.index("E") + 1]))
    freed: Dict[Tuple[str, int], float] = {}
    out = []
    for r in sorted(recs, key=lambda r: times[r.seq][0]):
        begin, end = times[r.seq]
        slots = [int(i) for i in r.command.rsplit(": ", 1)[1].split(",")]
        before = [freed[(r.host, i)] for i in slots if (r.host, i) in freed]
        if len(before) == len(slots):
            out.append(begin - max(before))
        for i in slots:
            freed[(r.host, i)] = end
    return out


def row_slots_dispatch(b: Bench, row: Row) -> None:
    """Jobs of 1 and 2 slots (`sleep 0.2`) on 2 hosts of 4 slots each."""
    wd = b.remote_workdir("- hostname: [node-1, node-2]\n  slots: 4\n")
    n = b.cfg.latency_jobs
    fresh_queue(wd, [])
    logs = os.path.join(wd, ".pegpar", "logs")
    shutil.rmtree(logs, ignore_errors=True)
    write_private(os.path.join(wd, "queue.yaml"), "".join(
        f"- command: ['echo S $(date +%s.%N); sleep 0.2; echo E $(date +%s.%N); : {{{{slots}}}}']\n"
        f"  slots: {1 + (i % 3 == 1)}\n" for i in range(n)))
    b.pegpar(["q"] + b.remote_args(), wd, "pegpar q (slots)")
    g = stat(slot_gaps(check_records(main_joblog(wd), n, "pegpar"), logs))
    b.warm_wrapper()
    rtt = stat([b.run([b.wrapper, "node-1", "true"], b.root, b.env, "ssh") for _ in range(max(5, b.cfg.reps * 3))])
    row.pegpar = f"median {fmt(g.median, 's')}, p95 {fmt(g.pct(95), 's')} ({len(g.samples)} jobs)"
    row.reference = f"median {fmt(rtt.median, 's')}, p95 {fmt(rtt.pct(95), 's')}"
    row.compare(g.median / rtt.median, g.median <= 0.25)
    row.notes.append("gap of a job: the moment it started minus the end of the last job that held one of its "
                     "slots, both printed by the jobs on the node (the joblog's end times come late, F1); it "
                     "includes the ssh round trip")


def row_broadcast(b: Bench, row: Row) -> None:
    wd = b.remote_workdir("".join(f"- {n}\n" for n in b.cluster.nodes))
    ref_dir = b.folder("broadcast-ref")
    phases: Dict[str, List[float]] = {}

    def pegpar_run() -> float:
        fresh_queue(wd, ["true"])
        wall = b.pegpar(["b"] + b.remote_args(), wd, "pegpar b")
        t = b.last
        check_records(main_joblog(wd), len(b.cluster.nodes), "pegpar b")
        bd = breakdown(wd)
        if bd is not None:
            first = min(r.start for r in bd.records)
            last = max(r.start + r.runtime for r in bd.records)
            run = bd.run_started or bd.first_reserved
            for name, value in (("start", run - t.began), ("check", bd.first_reserved - run),
                                ("waves", first - bd.first_reserved),
                                ("step", last - first), ("end", t.ended - last)):
                phases.setdefault(name, []).append(value)
        return wall

    def parallel_run() -> float:
        return b.parallel(["--nonall", "-S", ",".join(b.cluster.nodes), "--ssh", b.wrapper, "true"], ref_dir)

    peg, ref = alternate(b.cfg.reps, pegpar_run, parallel_run)
    p, r = stat(peg), stat(ref)
    row.pegpar = fmt_stat(p, "s")
    row.reference = fmt_stat(r, "s")
    row.compare(p.median / r.median, p.median / r.median <= 1.3)
    if phases:
        m = {k: stat(v).median for k, v in phases.items()}
        row.notes.append(
            f"pegpar's wall time, medians: {fmt(m['start'], 's')} from exec to the controller's start "
            f"(interpreter, imports, state directory), {fmt(m['check'], 's')} checking that the 4 hosts "
            f"answer and taking the entry, {fmt(m['waves'], 's')} for its 4 GNU parallel waves (one per "
            f"host) to start the first job, {fmt(m['step'], 's')} from the first job's start to the last "
            f"one's end, {fmt(m['end'], 's')} to notice the end and exit.")
        if row.met is False:
            wall, _ = b.wave_cost(True)
            row.why.append(
                f"`parallel --nonall` starts one GNU parallel and one ssh per host; pegpar adds, before "
                f"the step, its own start-up ({fmt(m['start'], 's')}) and an ssh round trip to every host "
                f"to check it answers ({fmt(m['check'], 's')}), then starts one GNU parallel per host, all "
                f"at once ({fmt(m['waves'], 's')} until the first job starts; one remote single-job wave "
                f"alone takes {fmt(wall.median, 's')} here).")


def _write_and_sync(path: str, data: bytes) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def row_pop(b: Bench, row: Row) -> None:
    from pegpar.queue import QueueFile

    folders = {n: b.folder(f"pop-{n}") for n in (SHORT_QUEUE, LONG_QUEUE)}
    queues: Dict[int, QueueFile] = {}
    left: Dict[int, int] = {}

    def refill(n: int) -> None:
        long_queue(os.path.join(folders[n], "queue.yaml"), n)
        consumed = os.path.join(folders[n], "consumed.yaml")
        if os.path.exists(consumed):
            os.unlink(consumed)
        queues[n] = QueueFile(os.path.join(folders[n], "queue.yaml"))
        left[n] = n

    def pop(n: int) -> float:
        if left[n] <= n // 2:  # the short queue runs dry: refill it, untimed
            refill(n)
        t0 = time.perf_counter()
        result = queues[n].take(1, lambda job: None)
        took = time.perf_counter() - t0
        if result is None or len(result[0]) != 1 or result[1] is not None:
            raise BenchError(f"take(1) on {n} entries returned {result!r}")
        left[n] -= 1
        return took * 1000

    for n in folders:
        refill(n)
    short, long_ = alternate(b.cfg.pops, lambda: pop(SHORT_QUEUE), lambda: pop(LONG_QUEUE))
    s, g = stat(short), stat(long_)
    row.pegpar = f"{fmt_stat(g, 'ms')} at {LONG_QUEUE:,} entries"
    row.reference = f"{fmt_stat(s, 'ms')} at {SHORT_QUEUE} entries"
    row.compare(g.median / s.median, g.median / s.median <= 2)
    sizes = {n: os.path.getsize(os.path.join(f, "queue.yaml")) for n, f in folders.items()}
    # what one pop costs beyond its fixed part: writing the file's bytes once more and syncing them
    scratch = os.path.join(b.folder("pop-io"), "file")
    big, small = b"x" * sizes[LONG_QUEUE], b"x" * sizes[SHORT_QUEUE]
    wb, ws = alternate(max(10, b.cfg.pops // 3), lambda: _write_and_sync(scratch, big),
                       lambda: _write_and_sync(scratch + "2", small))
    io_big, io_small = stat(wb).median * 1000, stat(ws).median * 1000
    row.notes.append(f"{b.cfg.pops} pops of each length, alternating; the long queue file is "
                     f"{sizes[LONG_QUEUE] / 1e6:.1f} MB, the short one {sizes[SHORT_QUEUE] / 1e3:.0f} kB. "
                     f"Writing and fsyncing a file of those sizes takes {io_big:.1f} ms and "
                     f"{io_small:.1f} ms here (median).")
    if row.met is False:
        row.why.append(
            f"a pop rewrites the whole queue file (every byte after the taken entry is copied into a "
            f"new file, which is fsynced and renamed over the old one), so its cost grows with the "
            f"file: the long queue's pop costs {g.median - s.median:.1f} ms more than the short one's, "
            f"and rewriting {sizes[LONG_QUEUE] / 1e6:.1f} MB with an fsync alone costs "
            f"{io_big - io_small:.1f} ms more than {sizes[SHORT_QUEUE] / 1e3:.0f} kB does; the parse "
            f"itself reads only the head entry.")


def _wait_status(wd: str, p: subprocess.Popen, running: int, timeout: float) -> None:
    """Until pegpar's status snapshot says `running` jobs run."""
    path = os.path.join(wd, ".pegpar", "status.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll() is not None:
            raise BenchError(f"pegpar exited {p.returncode} before {running} jobs ran")
        try:
            with open(path) as f:
                if json.load(f).get("running") == running:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{running} jobs were not running after {timeout:g} s")


def _stop(p: subprocess.Popen, sig: int, timeout: float) -> None:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _masters(pids: Sequence[int]) -> List[int]:
    """The ssh ControlMasters of the ssh clients among `pids`: they detach from
    the process that started them, so they are not in its tree."""
    paths = set()
    for pid in pids:
        m = re.search(r"ControlPath=(\S+)/%C", cmdline(pid))
        if m:
            paths.add(m.group(1) + "/")
    return [pid for pid in _pids() if pid not in pids and "[mux]" in cmdline(pid)
            and any(path in cmdline(pid) for path in paths)]


def memory(b: Bench, row: Row, *, hosts: Optional[str], args: List[str], name: str) -> None:
    wd = b.remote_workdir(hosts) if hosts is not None else b.workdir(name)
    fresh_queue(wd, ["sleep 120"] * 16)  # killed once measured
    p = subprocess.Popen(PEGPAR + ["q"] + args, cwd=wd, env=b.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_status(wd, p, 16, b.cfg.hang_guard / 4)
        time.sleep(0.3)
        samples: List[float] = []
        kinds: Dict[str, Tuple[int, int]] = {}
        for _ in range(3):
            pids = tree(p.pid)
            kb = {pid: rss_kb(pid) for pid in pids}
            samples.append(sum(kb.values()) / 1024)
            kinds = {}
            for pid, k in kb.items():
                kind = "pegpar" if pid == p.pid else _read(f"/proc/{pid}/comm").strip()
                count, total = kinds.get(kind, (0, 0))
                kinds[kind] = (count + 1, total + k)
            time.sleep(0.3)
        masters = _masters(pids)
        masters_mb = sum(rss_kb(pid) for pid in masters) / 1024
    finally:
        _stop(p, signal.SIGUSR2, 30)  # kill the sleeps: nothing more to learn from them
    total = stat(samples)
    row.pegpar = f"{fmt(total.median, 'MB')} in all"
    row.reference = f"{fmt(total.median / 16, 'MB')} per running job"
    row.met = total.median / 16 <= 30
    detail = ", ".join(f"{kind} x{count}: {kb_ / 1024:.0f} MB" for kind, (count, kb_) in
                       sorted(kinds.items(), key=lambda kv: -kv[1][1]))
    extra = (f"; outside the tree, {len(masters)} ssh ControlMaster(s) hold {masters_mb:.0f} MB more"
             if masters else "")
    row.notes.append(f"VmRSS summed over the tree (pages shared between processes count in each): "
                     f"{detail}{extra}.")


def row_memory_remote(b: Bench, row: Row) -> None:
    memory(b, row, hosts="- hostname: [node-1, node-2, node-3, node-4]\n  slot: [1, 2, 3, 4]\n",
           args=b.remote_args(), name="memory-remote")


def row_memory_local(b: Bench, row: Row) -> None:
    memory(b, row, hosts=None, args=["-j", "16"], name="memory-local")


def row_idle(b: Bench, row: Row) -> None:
    wd = b.workdir("idle")
    write_private(os.path.join(wd, "queue.yaml"), "[]\n")
    p = subprocess.Popen(PEGPAR + ["q", "--daemon"], cwd=wd, env=b.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_status(wd, p, 0, 60)  # started, and wrote its first snapshot
        time.sleep(1.0)
        c0, t0 = cpu_seconds(p.pid), time.perf_counter()
        time.sleep(b.cfg.idle_seconds)
        if p.poll() is not None:
            raise BenchError(f"the daemon exited {p.returncode}")
        c1, t1 = cpu_seconds(p.pid), time.perf_counter()
    finally:
        _stop(p, signal.SIGUSR1, 30)
    pct = (c1 - c0) / (t1 - t0) * 100
    row.pegpar = f"{pct:.2f} % of one core"
    row.met = pct < 2
    row.notes.append(f"{c1 - c0:.2f} s of CPU in {t1 - t0:.0f} s (utime + stime of pegpar and its children).")


def _record_start(wd: str, p: subprocess.Popen, count: int, timeout: float) -> float:
    """The start time of the joblog's `count`-th record, once it is there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        recs = joblog.read(main_joblog(wd))
        if len(recs) >= count:
            return recs[count - 1].start
        if p.poll() is not None:
            raise BenchError(f"pegpar exited {p.returncode} before job {count} ran")
        time.sleep(0.005)
    raise BenchError(f"job {count} did not run within {timeout:g} s")


def row_live(b: Bench, rows: List[Row]) -> None:
    """How fast a running `pegpar q --daemon` reacts to its files: the queue's
    lock released, an entry added, a sub-node added to hosts.yaml; each from
    the moment of the change to the start of the job it lets run."""
    n = 3 if b.cfg.quick else 10
    reference = stat([handover(b, ahead=True) for _ in range(n)])
    unlocked, added = _queue_latencies(b, n)
    joined = _hosts_latencies(b, n)
    for row, samples, bound in zip(rows, (unlocked, added, joined), (0.5, 1.0, 2.0)):
        s = stat(samples)
        row.pegpar = f"median {fmt(s.median, 's')}, max {fmt(s.hi, 's')} ({len(samples)} changes)"
        row.reference = f"median {fmt(reference.median, 's')}"
        row.compare(s.median / reference.median, s.hi <= bound)
    rows[0].notes.append("reference of 9a-9c: a local job handed to a GNU parallel already waiting on its "
                         f"input, from the write to its start ({n} hand-overs).")


def _queue_latencies(b: Bench, n: int) -> Tuple[List[float], List[float]]:
    """Lock released -> the job behind it starts; entry added -> it starts."""
    from pegpar.queue import QueueFile, hold_lock

    wd = b.workdir("live")
    path = os.path.join(wd, "queue.yaml")
    write_private(path, "[]\n")
    p = subprocess.Popen(PEGPAR + ["q", "--daemon", "-j", "1", "--no-progress"], cwd=wd, env=b.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unlocked, added = [], []
    try:
        _wait_status(wd, p, 0, 60)
        for i in range(n):
            with hold_lock(path, "bench", -1, lambda _: None):
                write_private(path, f"- true lock-{i}\n")
                time.sleep(0.3)  # the controller sees the new entry and finds the lock held
                began = time.time()
            unlocked.append(_record_start(wd, p, 2 * i + 1, 60) - began)
            time.sleep(0.3)
            QueueFile(path).add([f"true add-{i}"])  # what `pegpar add` does
            began = time.time()
            added.append(_record_start(wd, p, 2 * i + 2, 60) - began)
    finally:
        _stop(p, signal.SIGUSR1, 30)
    return unlocked, added


def _hosts_latencies(b: Bench, n: int) -> List[float]:
    """A second sub-node added to hosts.yaml -> the job waiting for one starts."""
    from pegpar.queue import QueueFile

    hosts_wd = b.workdir("live-hosts")
    hosts = os.path.join(hosts_wd, "hosts.yaml")
    one, two = "- hostname: [localhost]\n  slot: [1]\n", "- hostname: [localhost]\n  slot: [1, 2]\n"
    write_private(hosts, one)
    write_private(os.path.join(hosts_wd, "queue.yaml"), "- sleep 600\n")
    p = subprocess.Popen(PEGPAR + ["q", "--daemon", "--no-progress"], cwd=hosts_wd, env=b.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    joined = []
    try:
        _wait_status(hosts_wd, p, 1, 60)  # `sleep 600` holds slot 1 for the whole figure
        for i in range(n):
            write_private(hosts, one)
            time.sleep(2.5)  # slot 2 leaves (within 2 s)
            QueueFile(os.path.join(hosts_wd, "queue.yaml")).add([f"true join-{i}"])
            time.sleep(0.3)  # the job waits: no free sub-node
            began = time.time()
            write_private(hosts, two + f"# {i}\n")
            joined.append(_record_start(hosts_wd, p, i + 1, 60) - began)
    finally:
        _stop(p, signal.SIGTERM, 30)  # kills `sleep 600`
    return joined


def _heaviest_imports(b: Bench, args: List[str], cwd: str) -> str:
    """pegpar's own modules that cost the most to import, from `python -X importtime`."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "pegpar"] + args, cwd=cwd, env=b.env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=b.cfg.hang_guard)
    found, names = [], []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and m.group(3).startswith("pegpar."):
            names.append(m.group(3)[len("pegpar."):])
            if len(m.group(2)) <= 2:  # imported by pegpar's entry point or a command, not nested
                found.append((int(m.group(1)), m.group(3)))
    found.sort(reverse=True)
    return (", ".join(f"{name} {us / 1000:.0f} ms" for us, name in found[:4])
            + f"; {len(names)} pegpar modules in all ({', '.join(sorted(names))})")


def row_startup(b: Bench, rows: List[Row]) -> None:
    """`pegpar --help` and `pegpar status` against the interpreter's own start-up."""
    wd = b.workdir("startup")
    fresh_queue(wd, ["true"] * 4)
    b.pegpar(["q", "-j", "2"], wd, "pegpar q")  # so that status has a last run to show
    n = b.cfg.startup_reps
    help_, status, bare = alternate(
        n, lambda: b.pegpar(["--help"], wd, "pegpar --help"),
        lambda: b.pegpar(["status"], wd, "pegpar status"),
        lambda: b.run([sys.executable, "-c", "pass"], wd, b.env, "python"))
    py = stat(bare)
    for row, samples, args in zip(rows, (help_, status), (["--help"], ["status"])):
        s = stat(samples)
        row.pegpar = fmt_stat(s, "s")
        row.reference = fmt_stat(py, "s")
        row.compare(s.median / py.median, s.median <= 0.3)
        row.notes.append(f"pegpar's share above the interpreter's start-up: {fmt(s.median - py.median, 's')} "
                         f"(median minus median).")
        if row.met is False:
            row.why.append(f"imports: the heaviest of pegpar's own modules (cumulative, "
                           f"`python -X importtime`) are {_heaviest_imports(b, args, wd)}.")
    if b.cfg.quick:
        return
    # status on a long queue: it counts the queued jobs
    long_dir = b.workdir("status-long")
    long_queue(os.path.join(long_dir, "queue.yaml"), LONG_QUEUE)
    t = stat([b.pegpar(["status"], long_dir, "pegpar status") for _ in range(3)])
    rows[1].notes.append(f"with a {LONG_QUEUE:,}-entry queue.yaml, `pegpar status` takes "
                         f"{fmt(t.median, 's')} (it counts the jobs left in the queue).")


# -- the table ---------------------------------------------------------------------------------


def make_rows() -> List[Tuple[List[Row], Callable[[Bench], None]]]:
    def one(number: str, figure: str, target: str, fn) -> Tuple[List[Row], Callable[[Bench], None]]:
        row = Row(number, figure, target)
        return [row], (lambda b: fn(b, row))

    startup = [Row("8a", "`pegpar --help` wall time; ref.: `python -c pass`", "<= 0.3 s"),
               Row("8b", "`pegpar status` wall time (after a run); ref.: `python -c pass`", "<= 0.3 s")]
    live = [Row("9a", "live queue: the queue's lock released -> the job waiting behind it starts "
                      "(`pegpar q --daemon`, local)", "max <= 0.5 s"),
            Row("9b", "live queue: an entry added to an empty queue (`pegpar add`) -> it starts", "max <= 1 s"),
            Row("9c", "live hosts: a sub-node added to hosts.yaml -> a waiting job starts on it", "max <= 2 s")]
    return [
        one("1", "jobs/s, `true` jobs, 4 sub-nodes on 2 hosts (ssh); ref.: GNU parallel "
                 "`-S 2/node-1,2/node-2`, ControlMaster on", ">= 1.0 x ref.", row_remote_throughput),
        one("2", "jobs/s, `true` jobs, 8 local sub-nodes (`pegpar q -j 8`); ref.: `parallel -j8`",
            ">= 0.8 x ref.", row_local_throughput),
        one("3", "dispatch latency: a sub-node frees -> its next job starts (`sleep 0.2` jobs, "
                 "4 sub-nodes on 4 hosts); ref.: ssh round trip through a warm ControlMaster",
            "median <= 0.25 s", row_dispatch),
        one("4", "one broadcast step of `true` on 4 nodes (`pegpar b`), wall time; ref.: "
                 "`parallel --nonall` on the same hosts", "<= 1.3 x ref.", row_broadcast),
        one("5", "pop one job (`QueueFile.take(1)`): long queue; ref.: short queue",
            "long / short <= 2", row_pop),
        one("6a", "RSS of pegpar and its children, 16 sub-nodes (4 hosts x 4) running `sleep`",
            "<= 30 MB per running job", row_memory_remote),
        one("6b", "RSS of pegpar and its children, 16 local sub-nodes running `sleep`",
            "<= 30 MB per running job", row_memory_local),
        one("7", "CPU of an idle `pegpar q --daemon` (empty queue)", "< 2 % of one core", row_idle),
        one("10", "dispatch latency with slots: a job's slots free -> it starts (`sleep 0.2` jobs of 1 and "
                  "2 slots, 2 hosts of 4 slots); ref.: ssh round trip through a warm ControlMaster",
            "median <= 0.25 s", row_slots_dispatch),
        one("11a", "GNU parallel front end: `pegpar q -j 8 -- true` on stdin lines, wall time; "
                   "ref.: `parallel -j8 true` on the same input", "<= 1.2 x ref., CPU/job <= 1.3 x",
            row_input_local_stdin),
        one("11b", "GNU parallel front end: `pegpar q -j 8 -- true ::: 1..N`, wall time; ref.: "
                   "`parallel -j8 true ::: 1..N`", "<= 1.2 x ref., CPU/job <= 1.3 x", row_input_local_args),
        one("11c", "GNU parallel front end over ssh: `pegpar q -- true` on stdin, 4 sub-nodes on 2 hosts; "
                   "ref.: `parallel -S 2/node-1,2/node-2 --ssh WRAPPER true`", "<= 1.0 x ref., CPU/job <= 1.3 x",
            row_input_remote_stdin),
        one("11d", "GNU parallel front end, memory: pegpar's own peak RSS with 1,000,000 stdin lines "
                   "(`pegpar q -j 8 -- true`, 30 s); ref.: the same on 100 lines", "<= ref. + 5 MB",
            row_input_memory),
        (startup, lambda b: row_startup(b, startup)),
        (live, lambda b: row_live(b, live)),
    ]


def sanitize(text: str, b: Optional[Bench]) -> str:
    """No paths of this machine in the results."""
    if b is not None:
        text = text.replace(b.cluster.dir, "<cluster>").replace(b.root, "<bench dir>")
    return text.replace(ROOT, ".").replace(tempfile.gettempdir(), "$TMPDIR")


def machine(load_at_start: float) -> str:
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.machine())
    try:
        version = subprocess.run(["perl", PARALLEL, "--version"], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PARALLEL_HOME=tempfile.gettempdir())).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        version = "GNU parallel (version unknown)"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, {version} (vendored), {ssh}; load average {load_at_start:.1f} "
            f"at the start, {load:.1f} at the end (other work on the machine shows there)")


def render(rows: List[Row], cfg: Config, elapsed: float, load: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# pegpar benchmarks\n",
        "Written by `python3 bench/run.py` (see bench/README.md); run it again rather than edit.\n",
        f"- date: {now}; {'quick run (`--quick`)' if cfg.quick else 'full run'}, {elapsed:.0f} s",
        f"- machine: {machine(load)}",
        f"- work: {cfg.jobs} jobs per throughput run; {cfg.reps} timed repetition(s) of each "
        f"whole-command figure, pegpar and its reference alternating, after one untimed warm-up each; "
        f"cells are median (min – max)",
        "- cluster: 4 real sshd nodes on loopback (tests/cluster.py): jobs on them pay a real ssh "
        "round trip, and the nodes share the machine's cores with pegpar\n",
        "| # | figure | pegpar | reference | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "error" if r.error else ("–" if r.met is None else ("yes" if r.met else "**no**"))
        cells = [r.number, r.figure, f"error: {r.error}" if r.error else r.pegpar, r.reference,
                 r.ratio, r.target, met]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out.append("\nratio: pegpar / reference (row 5: long / short). Row 8's target applies to the whole "
               "wall time, interpreter start-up included.\n")
    out.append("## Notes\n")
    for r in rows:
        out += [f"- **{r.number}**: {note}" for note in r.notes]
        out += [f"- **{r.number}, why the target is missed**: {why}" for why in r.why]
    out.append("")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions, small job counts (CI)")
    ap.add_argument("--out", default=None,
                    help="where the markdown goes (default: bench/RESULTS.md; with --quick or --only, a temporary "
                         "file: RESULTS.md keeps every row)")
    ap.add_argument("--only", default=None, help="comma-separated rows, e.g. 1,3,6 (6 = 6a and 6b, 11 = 11a-11d)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = args.out or (os.path.join(tempfile.mkdtemp(prefix="pegpar-bench-"), "RESULTS.md")
                       if args.quick or args.only else RESULTS)
    wanted = set(args.only.split(",")) if args.only else None
    specs = [(rows, fn) for rows, fn in make_rows()
             if wanted is None or any({r.number, r.number.rstrip("abcd")} & wanted for r in rows)]

    # pegpar's modules byte-compiled, as pip leaves an installed package; without
    # it, an environment with PYTHONDONTWRITEBYTECODE compiles them at every start
    import pegpar
    compileall.compile_dir(os.path.dirname(os.path.abspath(pegpar.__file__)), quiet=1)
    started, load = time.perf_counter(), os.getloadavg()[0]
    root = tempfile.mkdtemp(prefix="pb-")  # short: ControlPath sockets live below it
    cluster = cluster_lib.start(4)
    bench = Bench(cfg, root, cluster)
    failed = False
    try:
        for rows, fn in specs:
            t0 = time.perf_counter()
            try:
                fn(bench)
            except Exception as err:  # one figure failing must not hide the others
                failed = True
                message = str(err) if isinstance(err, BenchError) else f"{type(err).__name__}: {err}"
                for r in rows:
                    r.error = sanitize(message, bench)
            for r in rows:
                r.notes = [sanitize(x, bench) for x in r.notes]
                r.why = [sanitize(x, bench) for x in r.why]
                verdict = "error" if r.error else {True: "met", False: "MISSED", None: ""}[r.met]
                print(f"{r.number:>3}  {r.error or r.pegpar}  |  {r.reference}  |  ratio {r.ratio}  "
                      f"|  {verdict}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        bench.cleanup()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = render([r for rows, _ in specs for r in rows], cfg, time.perf_counter() - started, load)
    if out == RESULTS and os.path.exists(RESULTS):  # bench/fleet.py's section stays
        with open(RESULTS) as f:
            old = f.read()
        at = old.find("\n" + FLEET_HEADER)
        if at >= 0:
            text = text.rstrip("\n") + "\n" + old[at:]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"results: {sanitize(out, None) if out == RESULTS else out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
