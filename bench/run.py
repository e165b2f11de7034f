"""pegpar's benchmarks: each pegpar figure next to a reference measured in the same run.

    python3 bench/run.py            full run (a few minutes); rewrites bench/RESULTS.md
    python3 bench/run.py --quick    CI: one short pass; writes --out (default: a temporary file)

The run starts the real-sshd cluster of the tests (tests/cluster.py: 4 nodes on
127.0.0.2-5), times pegpar and the reference side by side, alternating their
repetitions so that a noisy neighbour slows both, and writes a markdown table:
median and min-max of each figure, the reference, their ratio and the target.
The Notes under the table are measured too (joblog gaps, time breakdowns) and
say why a missed target is missed.

References are the vendored GNU parallel run by hand the way an expert would
(an ssh wrapper script that turns ControlMaster on, as pegpar's own does), the
ssh round trip, and the Python interpreter's start-up. Nothing here asserts a
time: the numbers are for reading (tests/test_bench.py only checks that every
row is produced).

`--only 1,3` runs some rows only (for looking into one figure).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import cluster as cluster_lib  # noqa: E402  (tests/ is not a package)

from pegpar import joblog  # noqa: E402

PARALLEL = os.path.join(ROOT, "vendor", "parallel", "parallel")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
PEGPAR = [sys.executable, "-m", "pegpar"]


@dataclass(frozen=True)
class Config:
    """How much work each figure does: the full run, or CI's quick pass."""

    quick: bool
    reps: int  # timed repetitions of a whole-command figure
    jobs: int  # `true` jobs of the throughput figures
    latency_jobs: int  # `sleep 0.2` jobs of the dispatch figure
    pops: int  # QueueFile.take calls per queue size
    big_queue: int  # entries of the long queue
    rss_sleep: int  # seconds the 16 jobs of the memory figure run
    idle_seconds: float  # the idle daemon is watched this long
    startup_reps: int  # `pegpar --help` / `status` runs
    hang_guard: float  # seconds before a child counts as hung


FULL = Config(quick=False, reps=5, jobs=200, latency_jobs=80, pops=300, big_queue=50_000,
              rss_sleep=8, idle_seconds=30, startup_reps=15, hang_guard=600)
QUICK = Config(quick=True, reps=2, jobs=40, latency_jobs=24, pops=40, big_queue=50_000,
               rss_sleep=4, idle_seconds=5, startup_reps=3, hang_guard=120)


class BenchError(Exception):
    """A figure could not be measured (pegpar failed, a job did not run)."""


# -- statistics ------------------------------------------------------------------------------


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
    if unit == "s" and x < 0.1:
        return f"{x * 1000:.1f} ms"
    if unit == "ms":
        return f"{x:.2f} ms"
    if abs(x) >= 100:
        return f"{x:.0f} {unit}".rstrip()
    if abs(x) >= 10:
        return f"{x:.1f} {unit}".rstrip()
    return f"{x:.2f} {unit}".rstrip()


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
    notes: List[str] = field(default_factory=list)


# -- processes ---------------------------------------------------------------------------------


def _proc_fields(pid: int) -> Optional[List[str]]:
    """Fields of /proc/PID/stat after the command name (index 0: state, 1: ppid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def tree(root: int) -> List[int]:
    """root and all its live descendants."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_fields(int(name))
            if st:
                children.setdefault(int(st[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie


def cpu_seconds(root: int) -> float:
    """CPU used by root and its descendants so far: each live process's own time
    plus that of its children it has reaped (utime, stime, cutime, cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree(root):
        st = _proc_fields(pid)
        if st:
            total += sum(int(x) for x in st[11:15])
    return total / ticks


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# -- the bench ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, root: str, cluster: cluster_lib.Cluster):
        self.cfg = cfg
        self.root = root
        self.cluster = cluster
        self.env = {k: v for k, v in os.environ.items()
                    if not (k == "PARALLEL" or k.startswith(("PARALLEL_", "PEGPAR_")))}
        self.env.pop("SSH_AUTH_SOCK", None)
        self.env["NO_COLOR"] = "1"
        self.par_env = dict(self.env, PARALLEL_HOME=self._dir("parallel-home"))
        self.wrapper = self._write_wrapper()
        self.workdirs: List[str] = []

    # -- files
    def _dir(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _write_wrapper(self) -> str:
        """The expert's ControlMaster: a wrapper without spaces in its path (F6)."""
        cm = self._dir("cm")
        path = os.path.join(self.root, "ssh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec ssh -F {self.cluster.ssh_config} -o ControlMaster=auto "
                    f"-o ControlPath={cm}/%C -o ControlPersist=300 \"$@\"\n")
        os.chmod(path, 0o700)
        return path

    def workdir(self, name: str, hosts: Optional[str] = None) -> str:
        path = self._dir(name)
        if hosts is not None:
            write_private(os.path.join(path, "hosts.yaml"), hosts)
        self.workdirs.append(path)
        return path

    # -- running things
    def run(self, argv: List[str], cwd: str, env: Dict[str, str], what: str) -> float:
        """Run to the end; wall time in seconds. BenchError when it fails."""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=self.cfg.hang_guard)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} did not finish within {self.cfg.hang_guard:g} s") from None
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            lines = [x for x in p.stderr.decode("utf-8", "replace").splitlines() if x.strip()]
            raise BenchError(f"{what} exited {p.returncode}: {lines[-1] if lines else '(no message)'}")
        return wall

    def pegpar(self, args: List[str], cwd: str, what: str = "pegpar") -> float:
        return self.run(PEGPAR + args, cwd, self.env, what)

    def parallel(self, args: List[str], cwd: str) -> float:
        return self.run(["perl", PARALLEL] + args, cwd, self.par_env, "GNU parallel")

    def remote_args(self) -> List[str]:
        return ["--ssh-config", self.cluster.ssh_config]

    def warm_wrapper(self) -> None:
        for node in self.cluster.nodes:
            self.run([self.wrapper, node, "true"], self.root, self.env, f"ssh {node}")

    def cleanup(self) -> None:
        """pegpar's run directories of our work dirs (its ssh masters die with the cluster)."""
        from pegpar import backend

        for path in self.workdirs:
            state = os.path.join(path, ".pegpar")
            if os.path.isdir(state):
                try:
                    shutil.rmtree(backend.runtime(state, None).run_dir, ignore_errors=True)
                except Exception:
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


def main_joblog(workdir: str) -> str:
    return os.path.join(workdir, ".pegpar", "joblog")


def check_records(path: str, expected: int, what: str) -> List[joblog.Record]:
    recs = joblog.read(path)
    bad = [r for r in recs if not r.ok]
    if len(recs) != expected or bad:
        raise BenchError(f"{what}: {len(recs)} of {expected} jobs recorded, {len(bad)} failed")
    return recs


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


def alternate(reps: int, *runs: Callable[[], float]) -> List[List[float]]:
    """Run each measurement `reps` times, interleaved: a slow moment hits all of them."""
    samples: List[List[float]] = [[] for _ in runs]
    for _ in range(reps):
        for i, run in enumerate(runs):
            samples[i].append(run())
    return samples


def ratio_cell(r: float) -> str:
    return f"{r:.2f}"


# -- the figures -----------------------------------------------------------------------------


def throughput(b: Bench, row: Row, *, hosts: Optional[str], pegpar_args: List[str],
               parallel_args: List[str], slots: int, name: str, minimum: float) -> None:
    """jobs/s of `true` jobs, pegpar against raw GNU parallel."""
    n = b.cfg.jobs
    wd = b.workdir(name, hosts)
    ref_dir = b._dir(name + "-ref")
    cmds = os.path.join(ref_dir, "cmds")
    write_private(cmds, "true\n" * n)
    ref_log = os.path.join(ref_dir, "joblog")
    last: Dict[str, List[joblog.Record]] = {}

    def pegpar_run(count: int = n) -> float:
        fresh_queue(wd, ["true"] * count)
        wall = b.pegpar(["q"] + pegpar_args, wd, "pegpar q")
        last["pegpar"] = check_records(main_joblog(wd), count, "pegpar")
        return wall

    def parallel_run() -> float:
        if os.path.exists(ref_log):
            os.unlink(ref_log)
        wall = b.parallel(parallel_args + ["--joblog", ref_log, "-a", cmds], ref_dir)
        last["ref"] = check_records(ref_log, n, "GNU parallel")
        return wall

    if hosts is not None:
        b.warm_wrapper()
    pegpar_run(8)  # warm-up: pegpar's ControlMasters and caches, not timed
    parallel_run()
    peg, ref = alternate(b.cfg.reps, pegpar_run, parallel_run)
    p = stat([n / w for w in peg])
    r = stat([n / w for w in ref])
    row.pegpar = fmt_stat(p, "jobs/s")
    row.reference = fmt_stat(r, "jobs/s")
    row.ratio = ratio_cell(p.median / r.median)
    row.met = p.median / r.median >= minimum
    pg, rg = gaps(last["pegpar"]), gaps(last["ref"], slots)
    prt = stat([x.runtime for x in last["pegpar"]])
    rrt = stat([x.runtime for x in last["ref"]])
    subnodes = len({x.host for x in last["pegpar"]})
    row.notes.append(
        f"last run's joblogs: a sub-node waits {fmt(stat(pg).median, 's')} (median; p95 "
        f"{fmt(stat(pg).pct(95), 's')}) between the end of a job and the start of its next under "
        f"pegpar, {fmt(stat(rg).median, 's')} (p95 {fmt(stat(rg).pct(95), 's')}) under GNU parallel; "
        f"a job itself takes {fmt(prt.median, 's')} under pegpar and {fmt(rrt.median, 's')} under "
        f"GNU parallel (JobRuntime, median). {subnodes} sub-nodes / (runtime + wait) = "
        f"{subnodes / (prt.median + stat(pg).median):.1f} jobs/s for pegpar.")


def row_remote_throughput(b: Bench, row: Row) -> None:
    throughput(b, row, hosts="- hostname: [node-1, node-2]\n  slot: [1, 2]\n",
               pegpar_args=b.remote_args(),
               parallel_args=["-S", "2/node-1,2/node-2", "--ssh", b.wrapper],
               slots=2, name="throughput-remote", minimum=1.0)


def row_local_throughput(b: Bench, row: Row) -> None:
    throughput(b, row, hosts=None, pegpar_args=["-j", "8"], parallel_args=["-j8"],
               slots=8, name="throughput-local", minimum=0.8)


def row_dispatch(b: Bench, row: Row) -> None:
    wd = b.workdir("dispatch", "".join(f"- {n}\n" for n in b.cluster.nodes))
    n = b.cfg.latency_jobs
    b.warm_wrapper()
    fresh_queue(wd, ["true"] * 4)
    b.pegpar(["q"] + b.remote_args(), wd, "pegpar q")  # warm-up
    fresh_queue(wd, ["sleep 0.2"] * n)
    b.pegpar(["q"] + b.remote_args(), wd, "pegpar q")
    recs = check_records(main_joblog(wd), n, "pegpar")
    g = stat(gaps(recs))
    rtt = stat([b.run([b.wrapper, "node-1", "true"], b.root, b.env, "ssh") for _ in range(max(5, b.cfg.reps * 4))])
    row.pegpar = f"median {fmt(g.median, 's')}, p95 {fmt(g.pct(95), 's')} ({len(g.samples)} gaps)"
    row.reference = f"median {fmt(rtt.median, 's')}, p95 {fmt(rtt.pct(95), 's')}"
    row.ratio = ratio_cell(g.median / rtt.median)
    row.met = g.median <= 0.25
    # the same gaps when GNU parallel alone feeds the same sub-nodes
    ref_dir = b._dir("dispatch-ref")
    cmds = os.path.join(ref_dir, "cmds")
    write_private(cmds, "sleep 0.2\n" * n)
    ref_log = os.path.join(ref_dir, "joblog")
    b.parallel(["-S", ",".join(f"1/{x}" for x in b.cluster.nodes), "--ssh", b.wrapper,
                "--joblog", ref_log, "-a", cmds], ref_dir)
    rg = stat(gaps(check_records(ref_log, n, "GNU parallel")))
    row.notes.append(f"GNU parallel alone, one invocation fed the same {n} jobs on the same 4 sub-nodes: "
                     f"gap median {fmt(rg.median, 's')}, p95 {fmt(rg.pct(95), 's')}.")


def row_broadcast(b: Bench, row: Row) -> None:
    wd = b.workdir("broadcast", "".join(f"- {n}\n" for n in b.cluster.nodes))
    ref_dir = b._dir("broadcast-ref")
    spans: List[float] = []

    def pegpar_run() -> float:
        fresh_queue(wd, ["true"])
        wall = b.pegpar(["b"] + b.remote_args(), wd, "pegpar b")
        recs = check_records(main_joblog(wd), len(b.cluster.nodes), "pegpar b")
        spans.append(max(r.start + r.runtime for r in recs) - min(r.start for r in recs))
        return wall

    def parallel_run() -> float:
        return b.parallel(["--nonall", "-S", ",".join(b.cluster.nodes), "--ssh", b.wrapper, "true"], ref_dir)

    b.warm_wrapper()
    pegpar_run()
    parallel_run()
    peg, ref = alternate(b.cfg.reps, pegpar_run, parallel_run)
    p, r = stat(peg), stat(ref)
    row.pegpar = fmt_stat(p, "s")
    row.reference = fmt_stat(r, "s")
    row.ratio = ratio_cell(p.median / r.median)
    row.met = p.median / r.median <= 1.3
    row.notes.append(f"the step itself (first start to last end in pegpar's joblog) takes "
                     f"{fmt(stat(spans).median, 's')}; the rest of pegpar's wall time is its own start-up, "
                     f"the reachability check of the hosts and the exit.")


def row_pop(b: Bench, row: Row) -> None:
    from pegpar.queue import QueueFile

    def times(entries: int, pops: int) -> List[float]:
        folder = b._dir(f"pop-{entries}")
        path = os.path.join(folder, "queue.yaml")
        lines = "".join(f"- python train.py --lr 0.{i % 10} --seed {i}\n" for i in range(entries))
        out: List[float] = []
        while len(out) < pops:
            write_private(path, lines)  # refill: the short queue runs dry
            consumed = os.path.join(folder, "consumed.yaml")
            if os.path.exists(consumed):
                os.unlink(consumed)
            q = QueueFile(path)
            for _ in range(min(entries // 2, pops - len(out))):
                t0 = time.perf_counter()
                result = q.take(1, lambda job: None)
                out.append(time.perf_counter() - t0)
                if result is None or len(result[0]) != 1 or result[1] is not None:
                    raise BenchError(f"take(1) on {entries} entries returned {result!r}")
        return out

    small, big = alternate(1, lambda: times(100, b.cfg.pops), lambda: times(b.cfg.big_queue, b.cfg.pops))
    s, g = stat([x * 1000 for x in small[0]]), stat([x * 1000 for x in big[0]])
    row.pegpar = f"{fmt_stat(g, 'ms')} at {b.cfg.big_queue:,} entries"
    row.reference = f"{fmt_stat(s, 'ms')} at 100 entries"
    row.ratio = ratio_cell(g.median / s.median)
    row.met = g.median / s.median <= 2
    size = os.path.getsize(os.path.join(b.root, f"pop-{b.cfg.big_queue}", "queue.yaml"))
    row.notes.append(f"{b.cfg.pops} pops at each size; the long queue file is {size / 1e6:.1f} MB.")


def _wait_running(wd: str, p: subprocess.Popen, count: int, timeout: float) -> None:
    import json

    path = os.path.join(wd, ".pegpar", "status.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll() is not None:
            raise BenchError(f"pegpar exited {p.returncode} before {count} jobs ran")
        try:
            with open(path) as f:
                if json.load(f).get("running") == count:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{count} jobs were not running after {timeout:g} s")


def _stop(p: subprocess.Popen, sig: int, timeout: float) -> None:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def memory(b: Bench, row: Row, *, hosts: Optional[str], args: List[str], name: str) -> None:
    wd = b.workdir(name, hosts)
    if hosts is not None:
        fresh_queue(wd, ["true"] * 4)
        b.pegpar(["q"] + args, wd, "pegpar q")  # warm-up: ControlMasters up, as in a long run
    fresh_queue(wd, [f"sleep {b.cfg.rss_sleep}"] * 16)
    p = subprocess.Popen(PEGPAR + ["q"] + args, cwd=wd, env=b.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_running(wd, p, 16, b.cfg.hang_guard / 4)
        time.sleep(0.5)
        samples, parts = [], {}
        for _ in range(3):
            pids = tree(p.pid)
            kb = {pid: rss_kb(pid) for pid in pids}
            samples.append(sum(kb.values()) / 1024)
            parts = {}
            for pid, k in kb.items():
                c = "pegpar" if pid == p.pid else comm(pid)
                n, tot = parts.get(c, (0, 0))
                parts[c] = (n + 1, tot + k)
            time.sleep(0.3)
        rundir = os.path.join(tempfile.gettempdir(), f"pegpar-{os.getuid()}")
        masters = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                   if "[mux]" in cmdline(pid) and rundir in cmdline(pid) and pid not in kb]
    finally:
        _stop(p, signal.SIGUSR2, 30)
    total = stat(samples)
    row.pegpar = f"{fmt(total.median, 'MB')} in all"
    row.reference = f"{fmt(total.median / 16, 'MB')} per running job"
    row.met = total.median / 16 <= 30
    detail = ", ".join(f"{c} x{n}: {tot / 1024:.0f} MB" for c, (n, tot) in
                       sorted(parts.items(), key=lambda kv: -kv[1][1]))
    extra = ""
    if masters:
        mb = sum(rss_kb(pid) for pid in masters) / 1024
        extra = f"; outside the tree, {len(masters)} ssh ControlMaster(s) add {mb:.0f} MB"
    row.notes.append(f"VmRSS summed over the tree (shared pages counted in every process): {detail}{extra}.")


def row_memory_remote(b: Bench, row: Row) -> None:
    memory(b, row, hosts="- hostname: [node-1, node-2, node-3, node-4]\n  slot: [1, 2, 3, 4]\n",
           args=b.remote_args(), name="memory-remote")


def row_memory_local(b: Bench, row: Row) -> None:
    memory(b, row, hosts=None, args=["-j", "16"], name="memory-local")


def row_idle(b: Bench, row: Row) -> None:
    wd = b.workdir("idle")
    write_private(os.path.join(wd, "queue.yaml"), "[]\n")
    p = subprocess.Popen(PEGPAR + ["q", "--daemon"], cwd=wd, env=b.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_running(wd, p, 0, 60)  # it has started and written its first status
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
    for row, samples in zip(rows, (help_, status)):
        s = stat(samples)
        row.pegpar = fmt_stat(s, "s")
        row.reference = fmt_stat(py, "s")
        row.ratio = ratio_cell(s.median / py.median)
        row.met = s.median <= 0.3
        row.notes.append(f"pegpar's own share above the interpreter's start-up: "
                         f"{fmt(s.median - py.median, 's')} (median minus median).")


# -- the table -------------------------------------------------------------------------------


def make_rows() -> List[Tuple[List[Row], Callable]]:
    def one(number, figure, target, fn):
        row = Row(number, figure, target)
        return [row], (lambda b: fn(b, row))

    specs = [
        one("1", "jobs/s, `true` jobs, 4 sub-nodes on 2 hosts (ssh)", ">= 1.0 x reference",
            row_remote_throughput),
        one("2", "jobs/s, `true` jobs, 8 local sub-nodes (`-j 8`)", ">= 0.8 x reference",
            row_local_throughput),
        one("3", "dispatch latency: a sub-node frees -> its next job starts (`sleep 0.2` jobs, "
                 "4 sub-nodes on 4 hosts) | ssh round trip through a warm ControlMaster",
            "median <= 0.25 s", row_dispatch),
        one("4", "one broadcast step of `true` on 4 nodes (`pegpar b`), wall time | "
                 "`parallel --nonall`", "<= 1.3 x reference", row_broadcast),
        one("5", "pop one job from queue.yaml (`QueueFile.take(1)`), long vs short queue",
            "ratio <= 2", row_pop),
        one("6a", "RSS of pegpar and its children, 16 sub-nodes (4 hosts x 4) running `sleep`",
            "<= 30 MB per running job", row_memory_remote),
        one("6b", "RSS of pegpar and its children, 16 local sub-nodes running `sleep`",
            "<= 30 MB per running job", row_memory_local),
        one("7", "CPU of an idle `pegpar q --daemon` (empty queue)", "< 2 % of one core", row_idle),
    ]
    startup = [Row("8a", "`pegpar --help` wall time | `python -c pass`", "<= 0.3 s"),
               Row("8b", "`pegpar status` wall time (after a run) | `python -c pass`", "<= 0.3 s")]
    specs.append((startup, lambda b: row_startup(b, startup)))
    return specs


def sanitize(text: str, b: Optional[Bench]) -> str:
    """No paths of this machine in the results."""
    if b is not None:
        text = text.replace(b.root, "<bench dir>").replace(b.cluster.dir, "<cluster dir>")
    return text.replace(tempfile.gettempdir(), "$TMPDIR").replace(ROOT, ".")


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        version = subprocess.run(["perl", PARALLEL, "--version"], capture_output=True, text=True,
                                 timeout=30, env=dict(os.environ, PARALLEL_HOME=tempfile.gettempdir())
                                 ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        version = "GNU parallel (version unknown)"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return (f"{os.cpu_count()} cores ({model or platform.machine()}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, {version} (vendored), {ssh}")


def render(rows: List[Row], cfg: Config, elapsed: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (`--quick`)" if cfg.quick else "full"
    out = [
        "# pegpar benchmarks\n",
        "Written by `python3 bench/run.py`; do not edit by hand (run it again).\n",
        f"- date: {now}; run: {mode}, {elapsed:.0f} s",
        f"- machine: {machine()}",
        f"- work: {cfg.jobs} jobs per throughput run, {cfg.reps} timed repetitions of each "
        f"whole-command figure (pegpar and its reference alternating, after one untimed warm-up "
        f"each); cells are median (min – max)",
        "- cluster: 4 real sshd nodes on loopback (tests/cluster.py); jobs on them pay a real ssh "
        "round trip, and the nodes share the machine's cores with pegpar\n",
        "| # | figure | pegpar | reference | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "error" if r.error else ("–" if r.met is None else ("yes" if r.met else "**no**"))
        pegpar = f"error: {r.error}" if r.error else r.pegpar
        cells = [r.number, r.figure, pegpar, r.reference, r.ratio, r.target, met]
        out.append("| " + " | ".join(c.replace("|", "\\|") if i > 1 else c.replace(" | ", " — ")
                                    for i, c in enumerate(cells)) + " |")
    out.append("\nThe ratio is pegpar / reference (row 5: long queue / short queue). "
               "Row 8 compares the whole wall time, interpreter start-up included, with the target.\n")
    out.append("## Notes\n")
    for r in rows:
        for note in r.notes:
            out.append(f"- **{r.number}**: {note}")
    out.append("")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions, small job counts (CI)")
    ap.add_argument("--out", default=None,
                    help="where the markdown goes (default: bench/RESULTS.md; with --quick a temporary file)")
    ap.add_argument("--only", default=None, help="comma-separated row numbers, e.g. 1,3,6a")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = args.out or (os.path.join(tempfile.mkdtemp(prefix="pegpar-bench-"), "RESULTS.md")
                       if args.quick else RESULTS)
    wanted = set(args.only.split(",")) if args.only else None
    specs = [(rows, fn) for rows, fn in make_rows()
             if wanted is None or any(r.number in wanted or r.number.rstrip("ab") in wanted for r in rows)]

    started = time.perf_counter()
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
                for r in rows:
                    r.error = sanitize(f"{type(err).__name__}: {err}" if not isinstance(err, BenchError)
                                       else str(err), bench)
            for r in rows:
                r.notes = [sanitize(n, bench) for n in r.notes]
                print(f"{r.number:>3}  {r.pegpar if not r.error else 'ERROR ' + r.error}  |  {r.reference}"
                      f"  |  ratio {r.ratio}  |  {'met' if r.met else 'MISSED' if r.met is False else ''}"
                      f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        bench.cleanup()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    rows = [r for rs, _ in specs for r in rs]
    text = render(rows, cfg, time.perf_counter() - started)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
