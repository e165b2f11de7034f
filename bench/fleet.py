"""pegpar on a large fleet, next to GNU parallel given the same jobs and hosts.

    python3 bench/fleet.py                    4x4, 16x4, 32x8, 64x8; appends to bench/RESULTS.md
    python3 bench/fleet.py --fleet 125x8      one fleet (H hosts x S sub-nodes each)
    python3 bench/fleet.py --quick            CI's pass: 4x4 with few jobs, to a temporary file

For each fleet H x S it starts H real sshd nodes on loopback (the tests'
cluster, with MaxStartups and MaxSessions raised as a fleet's admins would)
and runs, alternately, pegpar (hosts.yaml: H hosts, `slot: [1..S]`) and the
vendored GNU parallel as an expert runs it (`-S S/node-1,...`, an ssh
wrapper with ControlMaster on):

- fill: H x S jobs that each note when they start, then sleep: the time from
  the launch until every sub-node runs one, and the CPU the tool's whole
  process tree (and its ssh ControlMasters) used until then; FILLS times for
  each tool, which of the two goes first alternating (one fill on a busy
  machine moves a single run by a third), the medians in the table. The
  first fill of each tool opens its shared ssh connections, which both keep
  open: the later ones reuse them, as a user's next run would;
- while all run: the PSS of that tree by process kind, and pegpar's own CPU
  over STEADY seconds (its controller process alone);
- short jobs: 2 x H x S (at least 200) jobs of 0.2 s that each note their
  id and when they began: jobs lost or run twice, hosts pegpar marked down,
  and the dispatch gap (from a job's end to the next start in the same slot
  of its host, matched from the joblog); how long a job takes under each
  tool (JobRuntime), how much of it passes before its command begins on the
  node, and, from pegpar's journal, how long a job reserved for a sub-node
  whose parallel already runs waits for that parallel to start it; the same
  jobs under GNU parallel run as pegpar runs it, one invocation per host;
- a full fleet freeing one by one: every sub-node runs a first job that
  ends after both tools' fills (1.5 x the longer, at least 5 s), the ends
  spread over 10 s, then a job of 1 s: the dispatch gaps of those second
  jobs, from the joblogs and from the jobs' own notes of when their
  command began and ended (the nodes' clocks, the ssh sessions' ends and
  starts included), how busy the machine's cores were meanwhile, jobs lost
  or run twice.

Under the table, the targets a fleet's controller aims at (its own CPU,
memory, fill time, every job once at the largest fleet, the dispatch gap
there), each met or not, a missed gap with where its time went.

Each phase of each tool starts once the machine is quiet again: the
phase before ended by killing up to 1,000 jobs, whose sessions take seconds
to end on the nodes. Nothing is asserted: the table is for reading. A
fleet is a lot of processes on one machine: 64 x 8 runs 64 sshd trees and
512 jobs at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import heapq
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import cluster as cluster_lib  # noqa: E402  (tests/ is not a package)
import run as bench  # noqa: E402

from pegpar import joblog, runtime  # noqa: E402

FLEETS = ("4x4", "16x4", "32x8", "64x8")
SSHD_OPTIONS = {"MaxStartups": "400:30:800", "MaxSessions": "64"}
STEADY = 5.0  # seconds over which pegpar's own CPU is read while every job sleeps
FILLS = 3  # fills of each tool per fleet (the quick pass: 1)
MARK = "314.159"  # the fill jobs' sleep: longer than any fill, and found by it to be killed
HANG_GUARD = 600.0


@dataclass
class Run:
    fill: float = 0.0
    fills: List[float] = field(default_factory=list)  # every fill of this tool, when there were several
    fill_cpu: float = 0.0
    machine_cpu: float = 0.0  # CPU-s of every process on the machine during the fill (nodes included)
    pss: Dict[str, Tuple[int, float]] = field(default_factory=dict)  # kind -> (count, MB)
    own_cpu: Optional[float] = None  # pegpar's controller, % of a core
    jobs: int = 0
    wall: float = 0.0
    lost: int = 0
    twice: int = 0
    down: List[str] = field(default_factory=list)
    again: List[str] = field(default_factory=list)  # pegpar: why it ran a job again (a job counted twice)
    gaps: List[float] = field(default_factory=list)
    runtime: float = 0.0  # median JobRuntime of the short jobs (`sleep 0.2`)
    to_node: float = 0.0  # median time from the joblog's Starttime to the command's start on its node
    breakdown: Optional[bench.Breakdown] = None  # pegpar: its part of the gaps, from its journal
    per_host: Optional["Run"] = None  # pegpar's short jobs: GNU parallel's, one invocation per host
    steady: Optional["Run"] = None  # short jobs' runs: the full fleet freeing its sub-nodes one by one
    hold: float = 0.0  # steady: the first jobs' shortest sleep
    busy: Optional[float] = None  # steady: share of the machine's cores busy while the second jobs started
    node_gaps: List[float] = field(default_factory=list)  # steady: the gaps by the nodes' clocks

    @property
    def pss_total(self) -> float:
        return sum(mb for _, mb in self.pss.values())


class Fleet:
    def __init__(self, hosts: int, subs: int, root: str):
        self.hosts, self.subs = hosts, subs
        self.root = root
        self.cluster = cluster_lib.start(hosts, sshd_options=SSHD_OPTIONS)
        self.env = dict(os.environ, PARALLEL_HOME=os.path.join(root, "parallel-home"))
        os.makedirs(self.env["PARALLEL_HOME"], exist_ok=True)
        self._cm: Dict[str, str] = {}  # a phase's work directory's name -> its ControlMasters' sockets

    def ssh(self, wd: str) -> str:
        """GNU parallel's ssh wrapper for the phase run in `wd`: ControlMaster on,
        its sockets kept from one run of the phase to the next (the fills), not
        shared with the other phases, as pegpar's run directory is its work
        directory's."""
        name = os.path.basename(wd)
        cm = self._cm.setdefault(name, os.path.join(self.root, "cm", str(len(self._cm))))  # short: a socket path
        os.makedirs(cm, exist_ok=True)
        path = os.path.join(self.root, f"ssh-{name}")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec ssh -F {self.cluster.ssh_config} -o ControlMaster=auto "
                    f"-o ControlPath={cm}/%C -o ControlPersist=yes \"$@\"\n")
        os.chmod(path, 0o700)
        return path

    @property
    def size(self) -> int:
        return self.hosts * self.subs

    def stop(self) -> None:
        self.cluster.stop()
        subprocess.run(["pkill", "-f", os.path.join(self.root, "cm")], stderr=subprocess.DEVNULL)

    def workdir(self, name: str) -> str:
        wd = os.path.join(self.root, name)
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd, mode=0o700)
        nodes = ", ".join(self.cluster.nodes)
        bench.write_private(os.path.join(wd, "hosts.yaml"),
                            f"- hostname: [{nodes}]\n  slot: [{', '.join(str(i) for i in range(1, self.subs + 1))}]\n")
        return wd

    # -- the two tools, given a file of commands -------------------------------------

    def pegpar(self, wd: str, commands: List[str]) -> subprocess.Popen:
        bench.fresh_queue(wd, commands)
        return subprocess.Popen(bench.PEGPAR + ["q", "--no-progress", "--ssh-config", self.cluster.ssh_config,
                                                "--connect-timeout", "15"],
                                cwd=wd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(wd, "stderr"), "w"), start_new_session=True)

    def parallel(self, wd: str, commands: List[str]) -> subprocess.Popen:
        path = os.path.join(wd, "commands")
        with open(path, "w") as f:
            f.write("".join(c + "\n" for c in commands))
        return subprocess.Popen(self._parallel_argv(self.cluster.nodes, os.path.join(wd, "joblog"), path, self.ssh(wd)),
                                cwd=wd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(wd, "stderr"), "w"), start_new_session=True)

    def _parallel_argv(self, nodes: List[str], log: str, path: str, ssh: str) -> List[str]:
        """GNU parallel as an expert runs it on these hosts, the commands in `path`."""
        logins = ",".join(f"{self.subs}/{n}" for n in nodes)
        return ["perl", bench.PARALLEL, "--will-cite", "--ssh", ssh, "-S", logins, "--joblog", log, "-a", path]

    def parallel_per_host(self, wd: str, commands: List[str]) -> subprocess.Popen:
        """GNU parallel as pegpar runs it: one invocation per host (the commands
        dealt out in turn), all started at once."""
        lines = []
        ssh = self.ssh(wd)
        for k, node in enumerate(self.cluster.nodes):
            path = os.path.join(wd, f"commands-{k}")
            with open(path, "w") as f:
                f.write("".join(c + "\n" for c in commands[k::len(self.cluster.nodes)]))
            argv = self._parallel_argv([node], os.path.join(wd, f"joblog-{k}"), path, ssh)
            lines.append(" ".join(shlex.quote(a) for a in argv) + " &")
        return subprocess.Popen(["sh", "-c", "\n".join(lines + ["wait"])],
                                cwd=wd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(wd, "stderr"), "w"), start_new_session=True)

    def joblog(self, wd: str, tool: str) -> List[joblog.Record]:
        if tool == "parallel_per_host":
            return [r for k in range(self.hosts) for r in joblog.read(os.path.join(wd, f"joblog-{k}"))]
        return joblog.read(os.path.join(wd, ".pegpar", "joblog") if tool == "pegpar" else
                           os.path.join(wd, "joblog"))

    # -- phases ----------------------------------------------------------------------

    def fills(self, rounds: int) -> Tuple[Run, Run]:
        """pegpar's fills and GNU parallel's, `rounds` of each, the tool that
        goes first alternating: each tool's median (see median_fill)."""
        runs: Dict[str, List[Run]] = {"pegpar": [], "parallel": []}
        for k in range(rounds):
            for tool in ("pegpar", "parallel") if k % 2 == 0 else ("parallel", "pegpar"):
                runs[tool].append(self.fill(tool))
        return median_fill(runs["pegpar"]), median_fill(runs["parallel"])

    def fill(self, tool: str) -> Run:
        _settle()
        wd = self.workdir(f"fill-{tool}")
        starts = os.path.join(wd, "starts")
        commands = [f"echo $(date +%s.%N) >> {starts}; sleep {MARK}"] * self.size
        run = Run()
        # the ControlMasters an earlier fill of this tool left open (both tools keep
        # them): only their CPU from now on counts
        masters0 = {pid: _own_cpu(pid) for pid in self._masters(tool, wd)}
        t0, busy0 = time.time(), _machine_busy()
        p = getattr(self, tool)(wd, commands)
        try:
            deadline = t0 + HANG_GUARD
            while _lines(starts) < self.size:
                if p.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{tool} filled {_lines(starts)} of {self.size} sub-nodes; see {wd}/stderr")
                time.sleep(0.05)
            run.fill = max(float(x) for x in _read(starts).split()) - t0
            run.machine_cpu = _machine_busy() - busy0
            masters = self._masters(tool, wd)
            run.fill_cpu = bench.cpu_seconds(p.pid) + sum(_own_cpu(pid) - masters0.get(pid, 0.0) for pid in masters)
            time.sleep(1.0)
            run.pss = _pss_by_kind(bench.tree(p.pid) + self._masters(tool, wd), p.pid, tool)
            if tool == "pegpar":
                before, t = _own_cpu(p.pid), time.time()
                time.sleep(STEADY)
                run.own_cpu = 100 * (_own_cpu(p.pid) - before) / (time.time() - t)
        finally:
            _kill(p)
            subprocess.run(["pkill", "-f", f"sleep {MARK}"], stderr=subprocess.DEVNULL)
        return run

    def short_jobs(self, tool: str, count: int) -> Run:
        return self._jobs(tool, "jobs", ["sleep 0.2"] * count)

    def steady(self, tool: str, hold: float) -> Run:
        """Every sub-node runs a job of `hold` s to `hold` + 10 s (their ends
        spread over those 10 s), then one of 1 s: the gaps before the second
        jobs are those of a full fleet whose sub-nodes free one by one, its
        fill long over."""
        first = [f"sleep {hold + (i % 100) / 10:.1f}" for i in range(self.size)]
        run = self._jobs(tool, "steady", first + ["sleep 1"] * self.size, note_end=True)
        run.hold = hold
        return run

    def _jobs(self, tool: str, name: str, sleeps: List[str], note_end: bool = False) -> Run:
        """Jobs that each note their id and when they began, then sleep (and,
        `note_end`, note when they ended)."""
        _settle()
        wd = self.workdir(f"{name}-{tool}")
        done, ended = os.path.join(wd, "done"), os.path.join(wd, "ended")
        count = len(sleeps)
        commands = [f"echo {i} $(date +%s.%N) >> {done}; {sleep}"
                    + (f"; echo {i} $(date +%s.%N) >> {ended}" if note_end else "") for i, sleep in enumerate(sleeps)]
        run = Run(jobs=count)
        t0 = time.time()
        p = getattr(self, tool)(wd, commands)
        samples = [(t0, _machine_busy())]  # (when, busy CPU-s): how busy the machine was, when
        try:
            while True:
                try:
                    p.wait(timeout=0.25)  # returns the moment the tool ends: its wall time stays exact
                    break
                except subprocess.TimeoutExpired:
                    if time.time() - t0 > HANG_GUARD:
                        raise
                    samples.append((time.time(), _machine_busy()))
        finally:
            _kill(p)
        run.wall = time.time() - t0
        began = {}  # job -> when its command began on its node
        ids = []
        for line in _read(done).splitlines():
            i, _, at = line.partition(" ")
            ids.append(i)
            began[int(i)] = float(at)
        run.lost = len(set(range(count)) - {int(i) for i in ids})
        run.twice = len(ids) - len(set(ids))
        err = _read(os.path.join(wd, "stderr"))
        run.down = [line for line in err.splitlines() if " is down" in line or "no answer" in line]
        run.again = [line for line in err.splitlines() if "goes back to the queue" in line]
        records = self.joblog(wd, tool)
        run.gaps = slot_gaps(records, self.subs, tool)
        run.runtime = statistics.median(r.runtime for r in records) if records else 0.0
        to_node = [began[i] - r.start for r in records for i in [_job_id(r)] if i in began]
        run.to_node = statistics.median(to_node) if to_node else 0.0
        if tool == "pegpar":
            run.breakdown = bench.breakdown(wd)
        if name == "steady":  # the second jobs: ids from the fleet's size on
            second = sorted(r.start for r in records for i in [_job_id(r)] if i is not None and i >= self.size)
            run.busy = busy_share(samples, second[0], second[-1]) if second else None
        if note_end:  # the same gaps, from the nodes' clocks: a command's end to the next one's start
            finished = {int(i): float(at) for i, _, at in (line.partition(" ") for line in _read(ended).splitlines())}
            on_nodes = [dataclasses.replace(r, start=began[i], runtime=finished[i] - began[i])
                        for r in records for i in [_job_id(r)] if i in began and i in finished]
            run.node_gaps = slot_gaps(on_nodes, self.subs, tool)
        return run

    def _masters(self, tool: str, wd: str) -> List[int]:
        """The ssh ControlMasters of the tool's connections from work directory
        `wd` (outside its process tree)."""
        if tool == "parallel":
            if os.path.basename(wd) not in self._cm:
                return []  # no run of this phase has started: none is open
            where = self._cm[os.path.basename(wd)] + "/"
        else:  # pegpar's run directory of the work dir
            where = os.path.join(runtime.run_dir_of(os.path.join(wd, ".pegpar")), "cm") + "/"
        return [pid for pid in bench._pids() if "[mux]" in bench.cmdline(pid) and where in bench.cmdline(pid)]


def _job_id(rec: joblog.Record) -> Optional[int]:
    """The id a fleet job notes (`echo ID ...`), from its command."""
    words = rec.command.split()
    return int(words[1]) if len(words) > 1 and words[0] == "echo" and words[1].isdigit() else None


def slot_gaps(records: Sequence[joblog.Record], subs: int, tool: str) -> List[float]:
    """From each job's end to the next start in a slot of the same host: per
    host, jobs in start order take the slot that freed first (S slots a host)."""
    by_host: Dict[str, List[joblog.Record]] = {}
    for rec in records:
        host = rec.host.split(" ")[0] if tool == "pegpar" else rec.host
        by_host.setdefault(host, []).append(rec)
    gaps: List[float] = []
    for recs in by_host.values():
        ends: List[float] = []
        for rec in sorted(recs, key=lambda r: r.start):
            if len(ends) == subs:
                gaps.append(max(0.0, rec.start - heapq.heappop(ends)))
            heapq.heappush(ends, rec.start + rec.runtime)
    return gaps


def _lines(path: str) -> int:
    return _read(path).count("\n")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _own_cpu(pid: int) -> float:
    fields = bench._proc_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pss_by_kind(pids: Sequence[int], root: int, tool: str) -> Dict[str, Tuple[int, float]]:
    kinds: Dict[str, Tuple[int, float]] = {}
    for pid in pids:
        pss = 0
        for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
        cmd = bench.cmdline(pid)
        kind = (f"{tool} (controller)" if pid == root and tool == "pegpar" else
                "ssh ControlMaster" if "[mux]" in cmd else _read(f"/proc/{pid}/comm").strip())
        if kind == "ssh" and _is_shell(pid):  # a script named ssh: pegpar's wrapper
            kind = "sh (ssh wrapper)"
        count, total = kinds.get(kind, (0, 0.0))
        kinds[kind] = (count + 1, total + pss / 1024)
    return kinds


def median_fill(runs: Sequence[Run]) -> Run:
    """Several fills of one tool as one: the run of the median fill time (its
    PSS and pegpar's own CPU stand for all), with the median of each of the
    fill's figures and every fill time in `fills`."""
    middle = sorted(runs, key=lambda r: r.fill)[(len(runs) - 1) // 2]
    return dataclasses.replace(middle, fill=statistics.median(r.fill for r in runs),
                               fill_cpu=statistics.median(r.fill_cpu for r in runs),
                               machine_cpu=statistics.median(r.machine_cpu for r in runs),
                               fills=[r.fill for r in runs] if len(runs) > 1 else [])


def _settle(quiet: float = 0.25, longest: float = 120.0) -> None:
    """Until the machine is quiet (under `quiet` of a core busy for half a
    second), at most `longest` seconds: the phase before ended by killing a
    fleet's jobs, and its sessions end on the nodes for seconds afterwards.
    A run that began in that would be charged with them."""
    deadline = time.time() + longest
    while time.time() < deadline:
        before = _machine_busy()
        time.sleep(0.5)
        if _machine_busy() - before < 0.5 * quiet:
            return


def busy_share(samples: Sequence[Tuple[float, float]], start: float, end: float) -> Optional[float]:
    """Share of the machine's cores busy from `start` to `end`, from samples
    of (time, busy CPU-seconds since boot): over the samples that span the
    window (at least two); None when the samples do not reach it."""
    before = [s for s in samples if s[0] <= start]
    after = [s for s in samples if s[0] >= end]
    if not before or not after or after[0][0] <= before[-1][0]:
        return None
    (t0, b0), (t1, b1) = before[-1], after[0]
    return (b1 - b0) / (t1 - t0) / (os.cpu_count() or 1)


def _machine_busy() -> float:
    """CPU-seconds the whole machine has been busy since boot (/proc/stat)."""
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _is_shell(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) in ("sh", "dash", "bash")
    except OSError:
        return False


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(results: List[Tuple[str, Run, Run, Run, Run]]) -> List[str]:
    lines = [
        "| fleet (hosts x sub-nodes) | fill: all sub-nodes running | CPU to fill | local PSS while all run "
        "| pegpar's own CPU, all running `sleep` | short jobs: wall, lost / twice, hosts down "
        "| dispatch gap median (p90): short jobs | the same: a full fleet freeing one by one |",
        "|---|---|---|---|---|---|---|---|"]
    for name, pf, gf, pj, gj in results:
        gap = _gaps(pj.gaps, gj.gaps)
        steady = _gaps(pj.steady.gaps, gj.steady.gaps) if pj.steady is not None and gj.steady is not None else "-"
        lines.append(
            f"| {name} | {pf.fill:.1f} s vs {gf.fill:.1f} s ({_ratio(pf.fill, gf.fill)}) "
            f"| {pf.fill_cpu:.1f} s vs {gf.fill_cpu:.1f} s ({_ratio(pf.fill_cpu, gf.fill_cpu)}) "
            f"| {pf.pss_total:,.0f} MB vs {gf.pss_total:,.0f} MB ({_ratio(pf.pss_total, gf.pss_total)}) "
            f"| {pf.own_cpu:.1f} % of a core "
            f"| {pj.jobs} jobs: {pj.wall:.1f} s vs {gj.wall:.1f} s ({_ratio(pj.wall, gj.wall)}); "
            f"{pj.lost} / {pj.twice} vs {gj.lost} / {gj.twice}; {len(pj.down)} down "
            f"| {gap} | {steady} |")
    lines.append("")
    for name, pf, gf, pj, gj in results:
        if pf.fills and gf.fills:
            lines.append(f"- {name}, fill: {len(pf.fills)} runs of each tool, which goes first alternating; "
                         f"the medians above and here; every fill: pegpar "
                         f"{', '.join(f'{x:.1f}' for x in pf.fills)} s, GNU parallel "
                         f"{', '.join(f'{x:.1f}' for x in gf.fills)} s.")
        lines.append(f"- {name}, CPU of the whole machine during the fill (the nodes' sshd and jobs included): "
                     f"{pf.machine_cpu:.1f} s vs {gf.machine_cpu:.1f} s ({_ratio(pf.machine_cpu, gf.machine_cpu)}), "
                     f"on {os.cpu_count()} cores.")
        bd = pj.breakdown
        if bd is not None:
            lines.append(f"- {name}, short jobs: a `sleep 0.2` job takes {pj.runtime:.2f} s under pegpar and "
                         f"{gj.runtime:.2f} s under GNU parallel (JobRuntime, median: both stretch as the "
                         f"machine saturates), of which {pj.to_node:.2f} s and {gj.to_node:.2f} s from "
                         f"GNU parallel's start of the job to the command's start on the node. "
                         f"Under pegpar, a job for a sub-node whose parallel runs starts "
                         f"{bench.fmt(bd.handover_next.median, 's')} (p90 {bench.fmt(bd.handover_next.pct(90), 's')})"
                         f" after pegpar reserved it, its turn in that host's parallel included.")
        if pj.per_host is not None:
            ph = pj.per_host
            lines.append(f"- {name}, short jobs under GNU parallel run as pegpar runs it, one invocation per "
                         f"host started at once: {ph.wall:.1f} s ({_ratio(ph.wall, gj.wall)} of one invocation), "
                         f"{ph.to_node:.2f} s from the start of a job to its command's start on the node; "
                         f"{ph.lost} lost, {ph.twice} twice.")
        if pj.steady is not None and gj.steady is not None:
            ps, gs = pj.steady, gj.steady
            lines.append(f"- {name}, a full fleet freeing one by one: every sub-node runs a job of "
                         f"{ps.hold:.0f}-{ps.hold + 10:.0f} s, then one of 1 s ({ps.jobs} jobs): "
                         f"{ps.lost} / {ps.twice} vs {gs.lost} / {gs.twice} lost / twice, "
                         f"{len(ps.down)} host(s) down under pegpar.")
            sb = ps.breakdown
            if sb is not None:  # where a freed sub-node's wait goes, from pegpar's journal
                lines.append(f"- {name}, a full fleet: pegpar reserves a freed sub-node's next job "
                             f"{bench.fmt(sb.notice.median, 's')} (p90 {bench.fmt(sb.notice.pct(90), 's')}) after "
                             f"its last job's end, and that job starts {bench.fmt(sb.handover_next.median, 's')} "
                             f"(p90 {bench.fmt(sb.handover_next.pct(90), 's')}) after its reservation: pegpar's "
                             f"pop, then its host's parallel starting it.")
            if ps.node_gaps and gs.node_gaps:
                lines.append(f"- {name}, a full fleet, the same gaps by the nodes' clocks (from a job's command "
                             f"ending to the next command beginning in its slot, as each noted it): "
                             f"{_gaps(ps.node_gaps, gs.node_gaps)}: the end of one job's ssh session and the start of "
                             f"the next one's included, which the joblogs leave out.")
            if ps.busy is not None and gs.busy is not None:
                lines.append(f"- {name}, a full fleet: while the second jobs started, the machine's "
                             f"{os.cpu_count()} cores were {ps.busy:.0%} busy under pegpar and {gs.busy:.0%} under "
                             f"GNU parallel (/proc/stat: every process, the nodes' sshd and jobs included).")
            for line in ps.down:
                lines.append(f"- {name}, a full fleet, pegpar marked a host down: `{line.strip()}`")
        for line in pj.down:  # what pegpar said of each host it marked down, for whoever reads why
            lines.append(f"- {name}, short jobs, pegpar marked a host down: `{line.strip()}`")
        for phase, run in (("short jobs", pj), ("a full fleet", pj.steady)):
            for line in run.again[:MAX_SAID] if run is not None else ():  # a job counted twice: why it ran again
                lines.append(f"- {name}, {phase}, pegpar ran a job again: `{line.strip()}`")
        for tool, run in (("pegpar", pf), ("GNU parallel", gf)):
            kinds = ", ".join(f"{kind} x{count}: {mb:,.0f} MB" for kind, (count, mb) in
                              sorted(run.pss.items(), key=lambda kv: -kv[1][1]))
            lines.append(f"- {name}, {tool}, PSS while all run: {kinds}.")
    return lines


MAX_SAID = 5  # lines of pegpar's quoted in the notes, per phase

# What one controller aims at on a fleet; each row of `targets` says met or not.
OWN_CPU_MAX = 2.0  # % of a core, pegpar's own process, with 512 or more jobs running
PSS_MAX = 2.0  # local PSS while all run, x GNU parallel's
FILL_MAX = 1.3  # fill time, x GNU parallel's, for 32x8 and 64x8
FILL_FLEETS = ("32x8", "64x8")
GAP_MAX = 0.25  # s, median dispatch gap of the largest fleet freeing one by one (joblogs)


def targets(results: List[Tuple[str, Run, Run, Run, Run]]) -> List[str]:
    """The fleet targets, each with this run's figures and whether they are
    met; a missed gap comes with where its time went (pegpar's journal) and
    GNU parallel's figure for the same gap."""
    def row(target: str, figure: str, met: bool) -> str:
        return f"| {target} | {figure} | {'yes' if met else '**no**'} |"

    lines = ["| target | this run | met |", "|---|---|---|"]
    busy = [(name, pf) for name, pf, _, _, _ in results if _size(name) >= 512 and pf.own_cpu is not None]
    if busy:
        lines.append(row(f"pegpar's own CPU with 512 or more jobs running (`sleep`) < {OWN_CPU_MAX:g} % of a core",
                         ", ".join(f"{name}: {pf.own_cpu:.1f} %" for name, pf in busy),
                         all(pf.own_cpu < OWN_CPU_MAX for _, pf in busy)))
    pss = [(name, pf.pss_total / gf.pss_total) for name, pf, gf, _, _ in results if gf.pss_total]
    if pss:
        lines.append(row(f"local PSS while all run <= {PSS_MAX:g}x GNU parallel's",
                         ", ".join(f"{name}: {r:.2f}x" for name, r in pss), all(r <= PSS_MAX for _, r in pss)))
    fills = [(name, pf.fill / gf.fill) for name, pf, gf, _, _ in results if name in FILL_FLEETS and gf.fill]
    if fills:
        lines.append(row(f"fill of {' and '.join(FILL_FLEETS)} <= {FILL_MAX:g}x GNU parallel's",
                         ", ".join(f"{name}: {r:.2f}x" for name, r in fills), all(r <= FILL_MAX for _, r in fills)))
    if not results:
        return lines
    name, _, _, pj, gj = max(results, key=lambda r: _size(r[0]))
    runs = [(phase, run) for phase, run in (("short jobs", pj), ("a full fleet", pj.steady)) if run is not None]
    lines.append(row(f"the largest fleet, {name} ({_size(name):,} sub-nodes): every job recorded once, no host down",
                     "; ".join(f"{phase}: {run.lost} lost, {run.twice} twice, {len(run.down)} down"
                               for phase, run in runs),
                     all(not run.lost and not run.twice and not run.down for _, run in runs)))
    ps, gs = pj.steady, gj.steady
    if ps is None or gs is None or not ps.gaps or not gs.gaps:
        return lines
    gap = statistics.median(ps.gaps)
    lines.append(row(f"{name}, a full fleet freeing one by one: dispatch gap median (joblogs) <= {GAP_MAX:g} s",
                     f"{gap:.2f} s; GNU parallel {statistics.median(gs.gaps):.2f} s", gap <= GAP_MAX))
    sb = ps.breakdown
    if gap > GAP_MAX and sb is not None:
        busy_note = f", with the machine's cores {ps.busy:.0%} busy" if ps.busy is not None else ""
        lines += ["", f"- {name}, the gap's target is missed: pegpar reserves a freed sub-node's next job "
                  f"{bench.fmt(sb.notice.median, 's')} after the end, and the job starts "
                  f"{bench.fmt(sb.handover_next.median, 's')} after that (medians): the host's GNU parallel starting "
                  f"it{busy_note}; "
                  f"GNU parallel alone, given the same jobs and hosts, takes {statistics.median(gs.gaps):.2f} s "
                  f"for the same gap."]
    return lines


def parse_fleet(spec: str) -> Tuple[int, int]:
    """"HxS" -> (H hosts, S sub-nodes each)."""
    hosts, subs = (int(x) for x in spec.lower().split("x"))
    return hosts, subs


def _size(name: str) -> int:
    hosts, subs = parse_fleet(name)
    return hosts * subs


def _gaps(mine: List[float], theirs: List[float]) -> str:
    """pegpar's gaps vs GNU parallel's: median (p90) of each."""
    if not mine or not theirs:
        return "-"
    return (f"{statistics.median(mine):.2f} s ({_p90(mine):.2f}) vs "
            f"{statistics.median(theirs):.2f} s ({_p90(theirs):.2f})")


def _p90(values: List[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fleet", action="append", help="HxS: H hosts of S sub-nodes (repeatable)")
    ap.add_argument("--jobs", type=int, default=None, help="short jobs per fleet (default 2 x H x S, >= 200)")
    ap.add_argument("--quick", action="store_true", help="CI's pass: 4x4, 64 short jobs")
    ap.add_argument("--out", default=None, help="write the table here (default: append to bench/RESULTS.md)")
    args = ap.parse_args(argv)
    fleets = ["4x4"] if args.quick else (args.fleet or list(FLEETS))
    results = []
    for spec in fleets:
        hosts, subs = parse_fleet(spec)
        root = tempfile.mkdtemp(prefix="fleet-")
        fleet = Fleet(hosts, subs, root)
        try:
            count = args.jobs or (64 if args.quick else max(200, 2 * fleet.size))
            print(f"{spec}: fill", file=sys.stderr, flush=True)
            pf, gf = fleet.fills(1 if args.quick else FILLS)
            print(f"{spec}: {count} short jobs", file=sys.stderr, flush=True)
            pj, gj = fleet.short_jobs("pegpar", count), fleet.short_jobs("parallel", count)
            pj.per_host = fleet.short_jobs("parallel_per_host", count)
            # every sub-node's first job ends after both fills, the slowest of them too
            hold = max(5.0, 1.5 * max(pf.fills + gf.fills + [pf.fill, gf.fill]))
            print(f"{spec}: a full fleet freeing one by one (first jobs of {hold:.0f} s)", file=sys.stderr, flush=True)
            pj.steady, gj.steady = fleet.steady("pegpar", hold), fleet.steady("parallel", hold)
            results.append((spec, pf, gf, pj, gj))
            print("\n".join(table([results[-1]])), file=sys.stderr, flush=True)
        finally:
            fleet.stop()
            shutil.rmtree(root, ignore_errors=True)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = "\n".join([f"{bench.FLEET_HEADER} ({when}, {os.cpu_count()} cores; `python3 bench/fleet.py`)", "",
                      "pegpar vs the vendored GNU parallel given the same jobs and hosts (`-S S/node-1,...`, "
                      "ControlMaster on), alternately, on H real sshd nodes on loopback.", ""]
                     + table(results) + ["", "Targets:", ""] + targets(results) + ["", NOTES]) + "\n"
    if args.out or args.quick:
        out = args.out or os.path.join(tempfile.gettempdir(), "pegpar-fleet.md")
        with open(out, "w") as f:
            f.write(text)
    else:  # the last section of RESULTS.md, replaced by each run
        with open(bench.RESULTS) as f:
            old = f.read()
        at = old.find("\n" + bench.FLEET_HEADER)
        with open(bench.RESULTS, "w") as f:
            f.write((old[:at] if at >= 0 else old).rstrip("\n") + "\n\n" + text)
    print(text)
    return 0


NOTES = """\
How to read it: fill is from the launch until every sub-node runs a job (the
median of the fills listed under the table: the first of each tool opens its
shared ssh connections, the later ones reuse them, both tools keeping them
open; each phase below opens its own, for both tools); its CPU is that of
the tool's process tree and its ssh ControlMasters from the launch (the
nodes' sshd are not counted).
The dispatch gap is taken from the joblog, from a job's end to the next
start in a slot of its host: with the short jobs (0.2 s) and a
fill of many seconds, it mostly measures the fill (a host's slots free long
before the last hosts get their first jobs), for both tools; on a full
fleet, once the fill is over, every sub-node's first job ends in turn (their
ends spread over 10 s) and the gap is the wait of a freed sub-node for its
next job. Everything runs on one machine:
the nodes' sshd and jobs share its cores with the tools, which are all busy
during a large fill: its time follows the CPU of the whole machine. pegpar's
perls are its fork server and one parallel per host forked from it (PSS
counts the pages they share once); its ssh wrapper, a shell script named
ssh, is counted as "sh (ssh wrapper)"."""


if __name__ == "__main__":
    sys.exit(main())
