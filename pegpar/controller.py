"""The reconcile loop: desired state (the queue, the hosts) against observed
state (the joblogs of running waves), for queue mode and broadcast mode.

Each turn of the loop: read what jobs printed, read which jobs ended (each
wave's joblog), record them in the main joblog, and, when sub-nodes are free
and dispatching is allowed, take jobs from the queue and hand them to GNU
parallel. Signals only set flags; the loop acts on them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from pegpar import backend, expand, joblog, remote, runtime, spec
from pegpar.backend import Running, Wave
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job, SubNode
from pegpar.output import Printer, Tail
from pegpar.state import StateDir, highest_seq, state_dir_for

if TYPE_CHECKING:
    from pegpar.queue import Pending

KILL_GRACE = 4.0  # seconds for jobs to die on their nodes before parallel is told to kill
TICK = 0.05  # seconds between turns while jobs run
FAST_TICK = 0.005  # right after a job ended: the next ones may end soon (short jobs)
PROBE_EVERY = 3.0  # seconds between checks of a down host
SLOW_EVERY = 1.0  # status snapshot, hosts file and control requests
IDLE_TICK = 0.2  # while nothing runs: a new entry still starts well within 1 s
PUT_BACK = "pegpar put back interrupted jobs: "  # the comment above them in the queue file
WAITING_BACK = "pegpar put back jobs waiting to run again: "  # likewise, at the end of a stopped run


@dataclass
class Options:
    mode: str = "q"  # "q" queue mode, "b" broadcast mode
    queue_file: str = "queue.yaml"
    hosts_file: str = "hosts.yaml"
    ssh_config: Optional[str] = None
    joblog: Optional[str] = None  # default: STATE_DIR/joblog
    daemon: bool = False
    local_slots: int = 1
    ignore_errors: bool = False  # broadcast: carry on after a failed step
    timeout: Optional[float] = None
    keep_logs: bool = True
    quiet: bool = False
    requeue_interrupted: bool = True
    require_all_hosts: bool = False
    connect_timeout: int = 5
    retries: int = 0  # re-run a failed job up to this many times
    stdin: bool = False  # jobs come from stdin: no queue file is read or written
    progress: bool = True  # the status line at the bottom of a terminal
    allow_shared: bool = False  # accept queue/hosts files group or others may write


@dataclass
class Failure:
    seq: int
    node: str
    command: str
    exitval: int
    signal: int
    reason: str = ""


@dataclass
class Summary:
    started: float
    done: int = 0
    failed: List[Failure] = field(default_factory=list)
    killed: int = 0
    requeued: int = 0
    not_run: int = 0  # taken, then no sub-node could run it
    unreachable: bool = False


class Controller:
    def __init__(self, opts: Options, nodes: Sequence[SubNode], source, printer: Printer):
        self.opts = opts
        self.nodes = list(nodes)
        self.source = source
        self.printer = printer
        self.state = StateDir(state_dir_for(opts.queue_file))
        # Written by start() once this process owns the queue: the ssh wrapper
        # lives in a directory shared by every pegpar on this queue, and one
        # that is refused must not rewrite it under the controller that runs.
        self.rt: runtime.Runtime
        self.run_id = f"{int(time.time())}-{os.getpid()}"
        self.down: Dict[str, str] = {}  # host -> why
        self.probes: Dict[str, remote.Probe] = {}
        # host -> seqs of jobs put back from it while it was down: what is left of
        # them there is killed when it answers again, by this run or a later one
        self.left_behind: Dict[str, List[int]] = {}
        # hosts being asked whether they still answer, with the jobs that wait for the answer
        self.suspects: Dict[str, Tuple[remote.Probe, List[Tuple[Running, joblog.Record, str]]]] = {}
        self.next_probe: Dict[str, float] = {}
        self.leaving: set = set()  # sub-node names removed from the hosts file
        self.hosts_mtime = _mtime(opts.hosts_file)
        self.hosts_error: Optional[str] = None
        self.next_slow = 0.0
        # jobs to run again before taking from the queue, each with the seq of its
        # failed attempt (marked "again" in the journal once the job runs again)
        # and, for --retries, that attempt's failure (counted if it never does)
        self.retry: List[Tuple[Job, int, Optional[Failure]]] = []
        self.attempts: Dict[Tuple, int] = {}
        self._queued_mtime = -1.0
        self._queued_count: Optional[int] = None
        self.joblog_path = opts.joblog or os.path.join(self.state.path, "joblog")
        self.next_seq = joblog.last_seq(self.joblog_path) + 1
        self.waves: List[Wave] = []
        self.busy: Dict[str, Running] = {}  # sub-node name -> its job
        self.live: Dict[int, Running] = {}  # seq -> job, until its end is recorded
        self.open: Dict[Tuple[str, bool, int], Wave] = {}  # the open wave per host and session group
        self.released = 0  # sub-nodes freed by a job's reported end, before its record
        self.tails: Dict[int, Tuple[Tail, Tail]] = {}
        self.summary = Summary(started=time.time())
        self.stopping = False  # no new jobs; running ones finish
        self.killing = False  # kill running jobs, then exit
        self.aborted = False  # broadcast: a step failed
        self.dispatched = 0
        self.queue_error: Optional[str] = None
        self.queue_error_mtime = 0.0
        self.step = 0  # broadcast step number
        self.step_jobs: List[Running] = []
        self.step_results: List[Tuple[int, Dict[str, Tuple[int, int]]]] = []
        self.killers: list = []
        self.dead_waves: List[backend.LeftWave] = []  # found by _recover, removed by start()
        self.recovered: List[dict] = []  # journal records of jobs that ended while no pegpar ran
        self.carried: List[dict] = []  # an earlier run's "left" records this run takes over
        self.unreplaced: List[str] = []  # queue files a crash left unrenamed: likewise
        self.kill_deadline = 0.0
        self.pending_signals: List[str] = []
        self.warm: Dict[Tuple[str, bool, int], backend.Warm] = {}  # parallels ready per host

    # -- signals ---------------------------------------------------------
    def install_signals(self) -> None:
        """Handlers only note the signal; the loop acts on it at the start of
        its next turn, never in the middle of a pop or a launch."""
        def note(action):
            return lambda signum, frame: self.pending_signals.append(action)

        signal.signal(signal.SIGINT, note("interrupt"))
        signal.signal(signal.SIGHUP, note("stop"))
        signal.signal(signal.SIGUSR1, note("stop"))
        signal.signal(signal.SIGTERM, note("kill"))
        signal.signal(signal.SIGUSR2, note("kill"))

    def _handle_signals(self) -> None:
        while self.pending_signals:
            action = self.pending_signals.pop(0)
            if action == "kill" or (action == "interrupt" and self.stopping):
                self.kill()
            else:
                self.stop(by_ctrl_c=action == "interrupt")

    def stop(self, by_ctrl_c: bool = True) -> None:
        if not self.stopping:
            self.stopping = True
            self._discard_warm()
            self._close_open()
            how = "Ctrl-C again" if by_ctrl_c else "`pegpar stop --kill`"
            self.printer.say(f"stopping: no new jobs; waiting for {len(self.busy)} running ({how} kills them)")

    def kill(self) -> None:
        self.stopping = True
        if not self.killing:
            self.killing = True
            self._close_open()
            self.kill_deadline = time.time() + KILL_GRACE
            self.printer.say(f"killing {len(self.busy)} running job(s)")
            self.kill_jobs(list(self.busy.values()))

    def kill_jobs(self, jobs: List[Running]) -> None:
        """Kill jobs on their nodes, children included; parallel then records
        each one as it would any job that died of a signal."""
        by_node: Dict[str, List[Running]] = {}
        for job in jobs:
            by_node.setdefault(job.node.host, []).append(job)
        for group in by_node.values():
            self.killers.append(remote.kill_jobs(self.rt, group[0].node, [j.seq for j in group]))

    # -- start ----------------------------------------------------------
    def start(self) -> None:
        """Claim the queue, recover from an earlier crash, check the hosts."""
        self.state.claim({"pid": os.getpid(), "started": time.time(), "mode": self.opts.mode,
                          "queue_file": os.path.abspath(self.opts.queue_file),
                          "hosts_file": os.path.abspath(self.opts.hosts_file), "run": self.run_id})
        self.rt = runtime.runtime(self.state.path, self.opts.ssh_config, self.opts.connect_timeout)
        backend.forget_unfilled(self.rt)
        followed = self._recover()
        # One atomic rewrite: the seqs given out so far, this run, and the jobs it
        # follows (a crash now still finds them).
        self.state.journal_reset([{"event": "seqs", "seq": self.next_seq - 1},
                                  {"event": "run", "run": self.run_id, "pid": os.getpid(),
                                   "started": time.time(), "mode": self.opts.mode,
                                   "queue_file": os.path.abspath(self.opts.queue_file)}]
                                 + [dict(r, run=self.run_id) for r in followed + self.recovered + self.carried])
        for left in self.dead_waves:
            left.remove()
        for path in self.unreplaced:
            _unlink(path)
        # GNU parallel compiles (a few tenths of a second) while the hosts are checked
        self._warm_up()
        self.nodes = self._reachable(self.nodes, at_start=True)
        for host in list(self.left_behind):
            if host not in self.down:
                self._kill_left(host)

    def _reachable(self, nodes: List[SubNode], at_start: bool, every: Optional[List[SubNode]] = None
                   ) -> List[SubNode]:
        """Check the hosts of `nodes` (of `every` sub-node there will be: how
        many shared connections each host needs) and start their connections."""
        hosts = sorted({n.host for n in nodes if not n.local})
        groups = runtime.group_counts(every or nodes)
        # a live shared connection answers for its host (a check without a round trip)
        failed = remote.probe(self.rt, hosts, self.opts.connect_timeout + 1, shared_ok=True,
                               groups=groups) if hosts else {}
        for host, why in failed.items():
            self.printer.say(f"host {host} left out: {why}")
        if failed and self.opts.require_all_hosts and at_start:
            raise UserError(f"{len(failed)} host(s) unreachable and --require-all-hosts is set",
                            where=self.opts.hosts_file)
        for host, why in failed.items():  # keep them, down: they are probed again later
            self.down[host] = why
            self.next_probe[host] = time.time() + PROBE_EVERY
        return nodes

    def _recover(self) -> List[dict]:
        """Jobs dispatched by an earlier controller that never recorded their end:
        followed to their end when their wave still runs (their dispatch records
        are returned), recorded when it has ended, else reported as interrupted
        and queued again."""
        records = self.state.journal()
        # A seq given out stays used even when the joblog never got it: reused, it
        # would share wave files, job id and log files with a job that may still run.
        self.next_seq = max(self.next_seq, highest_seq(records) + 1)
        self._take_over_left(records)
        done = {r["seq"] for r in records if r.get("event") in ("done", "untaken")}
        pending = list({r["seq"]: r for r in records if r.get("event") == "dispatch" and r["seq"] not in done}
                       .values())
        # a recovery cut short (pegpar killed again) may have recorded some already
        recorded = {rec.seq: rec for rec in joblog.read(self.joblog_path)} if pending else {}
        names = {n.name for n in self.nodes}
        waves: Dict[str, Tuple[backend.LeftWave, List[dict]]] = {}
        ended: List[Tuple[Optional[backend.LeftWave], dict]] = []
        for r in pending:
            if r["seq"] in recorded:  # by a recovery cut short: this run's journal still gets it
                rec = recorded[r["seq"]]
                self.recovered += [r, {"event": "done", "seq": r["seq"], "exitval": rec.exitval,
                                       "signal": rec.signal}]
                continue
            left = backend.left_wave(self.rt, r["seq"])
            if left is not None and r["node"] in names:
                waves.setdefault(left.stem, (left, []))[1].append(r)
            else:
                ended.append((left, r))
        followed: List[dict] = []
        for left, rs in waves.values():
            if self._follow(left, rs):
                followed += rs
            else:
                ended += [(left, r) for r in rs]
        if followed and self.opts.mode == "b":
            # the step that still runs is followed to its end; the next one waits for it
            self.step += 1
            self.step_results.append((self.step, {}))
            self.step_jobs = [self.live[r["seq"]] for r in followed]
        requeue = []
        for left, r in sorted(ended, key=lambda x: x[1]["seq"]):
            if left is None and r.get("pending") and os.path.exists(r["pending"]):
                # pegpar died after journalling the job and before replacing the queue file
                self.printer.say(f"job #{r['seq']} on {r['node']} never left {self.opts.queue_file} (pegpar "
                                 f"stopped while taking it); it runs from there: {_one_line(r['command'])}")
                # removed once the journal no longer names the job (start()): a crash
                # before that must find it again
                self.unreplaced.append(r["pending"])
                if r.get("consumed"):  # it will be consumed again, from the queue file
                    from pegpar.queue import unconsume

                    unconsume(*r["consumed"])
                continue
            rec = left.record(self.rt, r["seq"]) if left is not None else None
            if rec is not None:  # it ended while no controller was watching
                joblog.append(self.joblog_path, [joblog.relabel(rec, r["seq"], r["node"], r["command"])])
                # this run's journal has it, ended: `retry --failed` finds it
                self.recovered += [r, {"event": "done", "seq": r["seq"], "exitval": rec.exitval,
                                       "signal": rec.signal}]
                self.printer.say(f"job #{r['seq']} on {r['node']} ended while pegpar was not running "
                                 f"(exit {rec.exitval}); recorded")
                continue
            if left is None:  # taken from the queue, but pegpar stopped before starting it
                self.printer.say(f"job #{r['seq']} on {r['node']} never started (pegpar stopped first): "
                                 f"{_one_line(r['command'])}")
            else:
                self.printer.say(f"job #{r['seq']} on {r['node']} was interrupted (pegpar stopped while it ran; "
                                 f"it may still be running there): {_one_line(r['command'])}")
            if r.get("canonical") is not None:
                # a broadcast step ran on every sub-node: it goes back once
                if self.opts.mode != "b" or r["canonical"] not in [item for _, _, item in requeue]:
                    requeue.append((r.get("run"), r["seq"], r["canonical"]))
        if requeue and self.opts.requeue_interrupted and not self.opts.stdin:
            self._put_back(requeue)
        # their files go once the journal no longer names their jobs (start())
        self.dead_waves = list({left.stem: left for left, _ in ended
                                if left is not None and left.pid() is None}.values())
        return followed

    def _take_over_left(self, records: List[dict]) -> None:
        """Jobs an earlier run put back from a host that was down and never saw
        answer again: their first copies may still run there. Killed once that
        host answers (start(), _probe_down); a host no longer in the hosts file
        is only named."""
        killed = {r["seq"] for r in records if r.get("event") == "left-killed"}
        left = {r["seq"]: r for r in records if r.get("event") == "left" and r["seq"] not in killed}
        hosts = {n.host for n in self.nodes if not n.local}
        for seq, r in sorted(left.items()):
            if r.get("host") in hosts:
                self.left_behind.setdefault(r["host"], []).append(seq)
                self.carried.append(r)
            else:
                self.printer.say(f"job #{seq} ran again elsewhere and may still run on {r.get('host')}, "
                                 "which is no longer in the hosts file: pegpar cannot kill it there")

    def _kill_left(self, host: str) -> None:
        """The host answers again: kill what is left there of jobs run again elsewhere."""
        seqs = self.left_behind.pop(host, [])
        node = next((n for n in self.nodes if n.host == host and not n.local), None)
        if not seqs or node is None:
            return
        self.printer.say(f"killing what is left on {host} of job(s) run again elsewhere: "
                         + ", ".join(f"#{seq}" for seq in seqs))
        self.killers.append(remote.kill_jobs(self.rt, node, seqs))
        self.state.journal_append([{"event": "left-killed", "run": self.run_id, "seq": seq} for seq in seqs],
                                  sync=False)

    def _put_back(self, requeue: List[Tuple[Optional[str], int, object]]) -> None:
        """Interrupted jobs go back to the top of the queue, under a comment
        naming them (seqs and run). A crash after this and before the journal
        is reset finds the comment and does not put them back twice."""
        done = {(run, int(seq)) for note in self.source.notes(PUT_BACK)
                for seqs, run in re.findall(r"((?:#\d+ )+)\(run ([^)\s]+)\)", note)
                for seq in re.findall(r"#(\d+)", seqs)}
        todo = [(run, seq, item) for run, seq, item in requeue if (run, seq) not in done]
        if todo:
            runs = dict.fromkeys(run for run, _, _ in todo)
            note = "; ".join("".join(f"#{seq} " for r, seq, _ in todo if r == run) + f"(run {run})"
                             for run in runs)
            self.source.add([item for _, _, item in todo], front=True, note=PUT_BACK + note)
            self.printer.say(f"{len(todo)} interrupted job(s) put back at the top of {self.opts.queue_file}")
        if len(todo) < len(requeue):
            self.printer.say(f"{len(requeue) - len(todo)} interrupted job(s) were put back in "
                             f"{self.opts.queue_file} already (by a recovery cut short)")

    def _follow(self, left: backend.LeftWave, pending: List[dict]) -> bool:
        """Take over a wave an earlier controller started and whose parallel
        still runs; False when it has ended (its joblog is then complete)."""
        nodes = {n.name: n for n in self.nodes}
        jobs: List[Optional[Running]] = [None] * len(left.ids)
        for r in pending:
            node = nodes[r["node"]]
            stem = os.path.join(self.rt.logs_dir, backend.log_name(r["seq"], node))
            jobs[left.index(self.rt, r["seq"]) - 1] = Running(r["seq"], node, r["command"], stem, stem + ".err",
                                                              r.get("start") or time.time(), _queue_job(r))
        wave = backend.adopt_wave(left, nodes[pending[0]["node"]].host, jobs)
        if wave is None:
            return False
        for job in jobs:
            if job is not None:
                self.printer.say(f"job #{job.seq} on {job.node.name} still runs (started before pegpar "
                                 f"stopped); following it: {_one_line(job.command)}")
                self.busy[job.node.name] = job
                self.live[job.seq] = job
                self.tails[job.seq] = (Tail(job.out_path), Tail(job.err_path))
                self.dispatched += 1
        self.waves.append(wave)
        return True

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        try:
            self.start()
            return self._loop()
        finally:
            self._discard_warm()
            self.state.release()

    def _loop(self) -> int:
        tick = TICK
        while True:
            finished_before = self.summary.done + len(self.summary.failed) + self.released
            self._handle_signals()
            self._observe()
            # a sub-node just freed: dispatch at once, sleep only when idle
            progressed = self.summary.done + len(self.summary.failed) + self.released != finished_before
            if time.time() >= self.next_slow:
                self.next_slow = time.time() + SLOW_EVERY
                self._slow_turn()
            self._check_suspects()
            self._probe_down()
            self._reload_hosts()
            self.killers = [k for k in self.killers if k.poll() is None]
            if self.killing:
                if time.time() > self.kill_deadline:
                    for wave in self.waves:  # a node that did not answer: cut its ssh
                        wave.terminate()
                if not self.waves:
                    self._settle_suspects()
                    break
            elif not self.stopping and not self.aborted:
                self._dispatch()
            self._close_unflushed()
            if not self.busy and not self.waves and not self.suspects:
                if self.stopping or self.aborted:
                    break
                if not self.opts.daemon and self.source.is_empty():
                    break
                if self._stuck_at_start():
                    raise UserError(self.queue_error or "")
                if self.nodes and all(n.host in self.down for n in self.nodes) and not self.opts.daemon:
                    self.printer.say("no host can be reached; giving up")
                    self.summary.unreachable = True
                    break
            if progressed:
                tick = FAST_TICK
            else:
                time.sleep(tick if self.busy or self.waves else IDLE_TICK)
                tick = min(TICK, tick * 1.5)
        self._await_killers()
        return self._finish()

    def _await_killers(self) -> None:
        """Kills under way on the nodes end before pegpar does, so that nothing
        of a killed job outlives pegpar; a node that does not answer is not
        waited for long."""
        deadline = time.time() + KILL_GRACE + self.opts.connect_timeout
        for killer in self.killers:
            try:
                killer.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass

    # -- once a second: status, control requests ---------------------------
    def _slow_turn(self) -> None:
        for req in self.state.take_requests():
            target = req.get("kill") or {}
            jobs = [j for j in self.busy.values()
                    if j.seq == target.get("seq") or j.node.name == target.get("node")]
            if jobs:
                self.printer.say("killing " + ", ".join(f"#{j.seq} on {j.node.name}" for j in jobs))
                self.kill_jobs(jobs)
        self.state.write_status(self.snapshot())
        self._show_progress()

    def _show_progress(self) -> None:
        if not self.printer.progress:
            return
        s = self.summary
        finished = s.done + len(s.failed)
        elapsed = time.time() - s.started
        queued = self._queued()
        total = f"/{finished + len(self.busy) + queued}" if queued is not None else ""
        eta = ""
        if queued is not None and finished and (queued or self.busy):
            per_job = elapsed / finished * max(1, len(self.busy)) / max(1, len(self.nodes))
            eta = f", ETA {_clock((queued + len(self.busy)) * per_job)}"
        self.printer.status(f"[{finished}{total} done, {len(self.busy)} running, "
                            f"{len(s.failed)} failed, {_clock(elapsed)}{eta}]")

    def _queued(self) -> Optional[int]:
        """Jobs still queued; counted again only when the file changes, and not
        for very large files (the count would parse all of it)."""
        if self.opts.stdin:
            return self.source.pending()
        mtime = self.source.mtime()
        if mtime != self._queued_mtime:
            self._queued_mtime = mtime
            self._queued_count = None
            try:
                if os.path.getsize(self.opts.queue_file) <= 1 << 20:
                    self._queued_count = sum(expand.count(e.dims) for e in spec.load_queue(self.opts.queue_file))
            except (OSError, UserError):
                pass
        return self._queued_count

    def snapshot(self) -> dict:
        now = time.time()
        nodes = []
        for n in self.nodes:
            job = self.busy.get(n.name)
            state = ("down" if n.host in self.down else "leaving" if n.name in self.leaving
                     else "running" if job else "idle")
            nodes.append({"name": n.name, "host": n.host, "state": state,
                          "job": {"seq": job.seq, "command": job.command, "since": job.started}
                          if job else None})
        return {"pid": os.getpid(), "mode": self.opts.mode, "run": self.run_id,
                "queue_file": os.path.abspath(self.opts.queue_file),
                "hosts_file": os.path.abspath(self.opts.hosts_file),
                "started": self.summary.started, "updated": now, "joblog": os.path.abspath(self.joblog_path),
                "nodes": nodes, "running": len(self.busy), "done": self.summary.done,
                "failed": len(self.summary.failed), "stopping": self.stopping,
                "queue_error": self.queue_error,
                **({"queued": self.source.pending()} if self.opts.stdin else {})}

    def _reload_hosts(self) -> None:
        """Every turn: a stat of hosts.yaml; read again only when it changed."""
        if self.opts.hosts_file is None:
            return
        mtime = _mtime(self.opts.hosts_file)
        if mtime == self.hosts_mtime:
            return
        self.hosts_mtime = mtime
        if mtime == 0.0:
            # Gone since the last look (deleted, or an editor that moves the old
            # file aside before writing the new one): "no hosts file" would mean
            # the local machine, and the fleet's jobs would run here.
            self.printer.say(f"{self.opts.hosts_file} is missing (keeping the previous sub-nodes)")
            return
        from pegpar.queue import check_not_shared

        try:
            check_not_shared(self.opts.hosts_file, "the hosts file", self.opts.allow_shared)
            fresh = load_nodes(self.opts)
        except UserError as err:
            if str(err) != self.hosts_error:
                self.printer.say(f"{err} (keeping the previous sub-nodes)")
            self.hosts_error = str(err)
            return
        self.hosts_error = None
        old = {n.name for n in self.nodes}
        new = {n.name for n in fresh}
        added = [n for n in fresh if n.name not in old]
        removed = [n for n in self.nodes if n.name not in new]
        newly_removed = [n for n in removed if n.name not in self.leaving]
        if added:
            self.printer.say("sub-nodes added: " + ", ".join(n.name for n in added))
            self.queue_error = None  # the head entry may render on them
            self._reachable(added, at_start=False, every=fresh)
        if newly_removed:
            self.printer.say("sub-nodes removed (running jobs finish): " + ", ".join(n.name for n in newly_removed))
        self.leaving = {n.name for n in removed}
        self.nodes = fresh + [n for n in removed if n.name in self.busy]

    def _probe_down(self) -> None:
        now = time.time()
        for host in list(self.down):
            probe = self.probes.get(host)
            if probe is None:
                if now >= self.next_probe.get(host, 0):
                    self.probes[host] = remote.Probe(self.rt, host, self.opts.connect_timeout + 1,
                                                      groups=runtime.group_counts(self.nodes).get(host, 1))
                continue
            result = probe.result()
            if result is None:
                continue
            del self.probes[host]
            if result == "":
                del self.down[host]
                self.printer.say(f"host {host} is back in service")
                self.queue_error = None  # a head entry only its sub-nodes render may run now
                self._kill_left(host)  # the host was cut off, not dead: their copies ran elsewhere
            else:
                self.down[host] = result
                self.next_probe[host] = now + PROBE_EVERY

    def _stuck_at_start(self) -> bool:
        """An invalid head entry before anything ran: an input error (exit 2),
        unless pegpar runs as a daemon and can wait for the fix."""
        return self.queue_error is not None and self.dispatched == 0 and not self.opts.daemon

    # -- observing -------------------------------------------------------
    def _observe(self) -> None:
        for seq, (out, err) in self.tails.items():
            job = self._job_by_seq(seq)
            if job is not None:
                self.printer.job_lines(job.node.name, out.lines())
                self.printer.job_lines(job.node.name, err.lines(), self.printer.err)
        for wave in list(self.waves):
            exited = wave.exited()  # before reading: a record written just before exit is not missed
            self._ends(wave)
            for job, rec in wave.new_records():
                self._finished(job, rec)
            if exited:
                for job in wave.unfinished():
                    self._finished(job, None)
                if not self.killing:
                    for line in wave.messages():  # GNU parallel's own: "parallel: Warning: ..."
                        self.printer.say(line if line.startswith("parallel: ") else f"parallel: {line}")
                self._close(wave)
                wave.cleanup()
                self.waves.remove(wave)
        if self.opts.mode == "b" and self.step_jobs and not any(
                j.seq in self._running_seqs() for j in self.step_jobs):
            self._step_done()

    def _ends(self, wave: Wave) -> None:
        """Jobs of an open wave that reported their end: their sub-nodes are
        free at once (their records follow when the wave gets input or is
        closed). A remote job that ended with ssh's failure or a signal keeps
        its sub-node until its record says whether the host died: the wave is
        closed so that the record comes now."""
        for job, status in wave.new_ends():
            if not job.node.local and status > 128:
                self._close(wave)
                continue
            if self.busy.get(job.node.name) is job:
                del self.busy[job.node.name]
                wave.unflushed += 1
                self.released += 1

    def _close(self, wave: Wave) -> None:
        wave.close()
        for key, other in list(self.open.items()):
            if other is wave:
                del self.open[key]

    def _close_open(self) -> None:
        for wave in list(self.open.values()):
            self._close(wave)

    def _close_unflushed(self) -> None:
        """An open wave holding ended jobs that got no input since (their
        sub-nodes took no new job) is closed: parallel then records them."""
        for wave in list(self.open.values()):
            if wave.unflushed:
                self._close(wave)

    def _running_seqs(self):
        return {j.seq for j in self.busy.values()}

    def _job_by_seq(self, seq: int) -> Optional[Running]:
        return self.live.get(seq)

    def _finished(self, job: Running, rec: Optional[joblog.Record]) -> None:
        out, err = self.tails.pop(job.seq)
        self.printer.job_lines(job.node.name, out.lines(final=True))
        err_lines = err.lines(final=True)
        self.printer.job_lines(job.node.name, err_lines, self.printer.err)
        if rec is None:  # parallel recorded nothing: killed (F8) or parallel itself failed
            now = time.time()
            rec = joblog.Record(0, job.node.host, job.started, now - job.started, 0, 0, -1,
                                signal.SIGTERM if self.killing else 0, job.command)
        if self.killing and not rec.ok:
            self.summary.killed += 1
        rec = joblog.relabel(rec, job.seq, job.node.name, job.command)
        joblog.append(self.joblog_path, [rec])
        # not synced: recovery also checks the joblog, and a job whose end is lost
        # to a power cut is reported as interrupted, never lost
        self.state.journal_append([{"event": "done", "run": self.run_id, "seq": job.seq,
                                    "exitval": rec.exitval, "signal": rec.signal}], sync=False)
        self.live.pop(job.seq, None)
        if self.busy.get(job.node.name) is job:
            del self.busy[job.node.name]
        if job.node.name in self.leaving and self.opts.mode == "q" and job.node.name not in self.busy:
            self.nodes = [n for n in self.nodes if n.name != job.node.name]
        if self.opts.mode == "b":
            self.step_results[-1][1][job.node.name] = (rec.exitval, rec.signal)
        if not self.opts.keep_logs:
            for path in (job.out_path, job.err_path):
                _unlink(path)
        _unlink(job.out_path + ".seq")
        if rec.ok:
            self.summary.done += 1
            return
        reason = err_lines[-1] if err_lines and rec.exitval == 255 else ""
        if self.opts.timeout and rec.signal and rec.runtime >= self.opts.timeout and not self.killing:
            reason = f"timed out after {self.opts.timeout:g} s"
            # parallel killed the job's ssh client (or its local process); with a
            # shared ssh connection the job itself goes on running on its node
            self.kill_jobs([job])
        # 255: ssh's own failure; 129..254: killed by a signal, as the processes of a
        # node that goes down are (the exit status may get out before the connection dies)
        if rec.exitval > 128 and self._may_die_with_its_host(job):
            if job.node.host in self.down:
                self._put_back_from_down(job, reason)
            else:  # is the host still there? Asked in the background; its sub-nodes wait
                probe, jobs = self.suspects.get(job.node.host) or (
                    remote.Probe(self.rt, job.node.host, self.opts.connect_timeout + 1), [])
                self.suspects[job.node.host] = (probe, jobs + [(job, rec, reason)])
            return
        self._failed(job, rec, reason)

    def _failed(self, job: Running, rec: joblog.Record, reason: str) -> None:
        self.summary.failed.append(Failure(job.seq, job.node.name, job.command,
                                           rec.exitval, rec.signal, reason))
        if self.opts.retries and not self.stopping and job.job is not None and not self.aborted:
            # queue mode: the job again, on the next free sub-node; broadcast: the
            # step's job again on the same sub-node, and the step waits for it
            key = (job.job.command, job.job.params, str(job.job.source),
                   job.node.name if self.opts.mode == "b" else "", self.step)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] <= self.opts.retries:
                self.printer.say(f"job #{job.seq} failed on {job.node.name}; retrying "
                                 f"({self.attempts[key]}/{self.opts.retries})")
                failure = self.summary.failed.pop()
                if self.opts.mode == "q":
                    self.retry.append((job.job, job.seq, failure))
                else:
                    again = self._reserve(job.job, job.node, job.command)
                    self._journal_dispatch([again], again=[job.seq])
                    self.step_jobs += self._launch([again])

    def _may_die_with_its_host(self, job: Running) -> bool:
        """A remote queue job that ended with ssh's failure (255) or by a
        signal may have died with its host: if the host no longer answers, it
        goes down and the job runs again elsewhere."""
        return not (job.node.local or self.killing or job.job is None or self.opts.mode != "q")

    def _check_suspects(self) -> None:
        """The answers about hosts whose jobs ended as if the host died."""
        for host, (probe, jobs) in list(self.suspects.items()):
            why = probe.result()
            if why is None:
                continue
            del self.suspects[host]
            if why:
                self.down[host] = why
                self.next_probe[host] = time.time() + PROBE_EVERY
            for job, rec, reason in jobs:
                if why:
                    self._put_back_from_down(job, reason)
                else:  # the host answers: the job itself failed
                    self._failed(job, rec, reason)

    def _settle_suspects(self) -> None:
        """pegpar is killed while hosts are still being asked about: their jobs
        go back to the queue unasked (the safe side: one may run twice, none is lost)."""
        for host, (probe, jobs) in list(self.suspects.items()):
            probe.kill()
            self.down.setdefault(host, "not checked: pegpar was stopping")
            for job, _, reason in jobs:
                self._put_back_from_down(job, reason)
        self.suspects.clear()

    def _put_back_from_down(self, job: Running, reason: str) -> None:
        assert job.job is not None
        self.printer.say(f"host {job.node.host} is down ({reason or self.down[job.node.host]}); job #{job.seq} "
                         "goes back to the queue")
        self.left_behind.setdefault(job.node.host, []).append(job.seq)
        self.state.journal_append([{"event": "left", "run": self.run_id, "seq": job.seq, "host": job.node.host}]
                                  + self._requeue(job.job, job.seq), sync=False)
        self.summary.requeued += 1

    def _requeue(self, job: Job, seq: int) -> List[dict]:
        """Queue a failed job again (its attempt #seq); returns the journal's
        "again" mark when it is back in the queue file (a crash then leaves it
        queued). A job kept in memory is marked when it runs again: until then
        a crash leaves a failure `retry --failed` finds, never nothing."""
        if not self.opts.stdin and self.opts.mode == "q":
            try:
                self.source.add([job.canonical()], front=True, timeout=2)
                return [self._again(seq)]
            except Exception:  # the lock is held too long: keep it in memory, it still runs
                pass
        self.retry.append((job, seq, None))
        return []

    def _again(self, seq: int) -> dict:
        """The journal's mark of a failed job run again: its last attempt counts (status, retry)."""
        return {"event": "again", "run": self.run_id, "seq": seq}

    # -- dispatching -------------------------------------------------------
    def _dispatch(self) -> None:
        if self.queue_error is not None:
            if self.source.mtime() == self.queue_error_mtime:
                return  # wait until the user changes the file
            self.queue_error = None
        if self.opts.mode == "b":
            if not self.busy and not self.step_jobs:
                self._start_step()
            return
        free = [n for n in self.nodes if n.name not in self.busy and n.host not in self.down
                and n.host not in self.suspects and n.name not in self.leaving]
        if not free:
            return
        placed: List[Running] = []
        idle = list(free)

        def accept(job: Job) -> None:
            _check_names(job, self.nodes)
            node, command = self._placement(job, idle)
            idle.remove(node)
            placed.append(self._reserve(job, node, command))

        again: List[int] = []
        while self.retry and idle:
            job, seq, _ = self.retry[0]
            try:
                accept(job)
            except NotYet:
                break  # it keeps its place in line
            except UserError as err:  # its sub-node is gone and no other renders it
                self.printer.say(f"{err}; job not run: {_one_line(job.command)}")
                self.summary.not_run += 1
            else:
                again.append(seq)
            self.retry.pop(0)
        ready = len(placed)
        self._journal_dispatch(placed, again=again)
        if ready < len(free):
            ready += self._take(len(free) - ready, accept,
                                lambda pending, start=ready: self._journal_dispatch(placed[start:], pending),
                                lambda start=ready: self._journal_untaken(placed[start:]))
        self._launch(self._only_taken(placed, ready))

    def _placement(self, job: Job, idle: List[SubNode]) -> Tuple[SubNode, str]:
        """The first idle sub-node the job renders on, with its command. When
        none does but a busy one would, NotYet (the job waits for it); when no
        sub-node at all would, the error of the first idle one."""
        first: Optional[UserError] = None
        for node in idle:
            try:
                return node, expand.render(job, node)
            except UserError as err:
                first = first or err
        down = []
        for node in self.nodes:
            if node not in idle and node.name not in self.leaving:
                try:
                    expand.render(job, node)
                except UserError:
                    continue
                if node.host not in self.down:  # busy, placed this turn, or its host asked about
                    raise NotYet(f"waits for {node.name} or another sub-node it renders on")
                down.append(node.name)
        assert first is not None
        if down:  # checked again when a host comes back
            raise UserError(f"{first.message}; it would render on {', '.join(down[:3])}, whose host is down",
                            where=first.where)
        raise first

    def _only_taken(self, placed: List[Running], ready: int) -> List[Running]:
        """Only the reservations whose job the queue let go of: the others (an
        I/O error, the file changed under the pop) were never journalled and
        their jobs stay queued."""
        return placed[:ready]

    def _take(self, n: int, accept, on_commit, on_abandon) -> int:
        """Take up to n jobs through `accept`; returns how many were taken."""
        mtime = self.source.mtime()
        result = self.source.take(n, accept, on_commit, on_abandon)
        if result is None:
            return 0  # the queue is locked (pegpar l, pegpar add): try again next turn
        taken, error = result
        if error is not None and not isinstance(error, NotYet):
            self.queue_error = str(error)
            self.queue_error_mtime = mtime
            if self.opts.stdin and self.dispatched:  # no fix can come: the run ends
                self.printer.say(f"{error}; not run: this line and the {self.source.pending() - 1} after it")
                self.stopping = True
            elif self.dispatched or self.opts.daemon:
                self.printer.say(f"{error} (waiting for the queue to be fixed)")
        return len(taken)

    def _reserve(self, job: Job, node: SubNode, command: str) -> Running:
        """Give a job its seq and its sub-node; `_journal_dispatch` records it."""
        seq = self.next_seq
        self.next_seq += 1
        stem = os.path.join(self.rt.logs_dir, backend.log_name(seq, node))
        return Running(seq, node, command, stem, stem + ".err", time.time(), job)

    def _journal_dispatch(self, placed: List[Running], pending: Optional[Pending] = None,
                          again: Sequence[int] = ()) -> None:
        """Journal jobs at the moment the queue lets go of them (called by the
        queue just before it replaces its file): a crash before leaves them
        queued and out of the journal, a crash after finds them in the journal.
        `pending`: the queue's new file until it replaces the old one (a crash
        in between leaves it, and recovery knows the jobs are still queued) and
        the part of consumed.yaml written for them (recovery takes it out).
        `again`: failed attempts these jobs run again (see _requeue)."""
        self.state.journal_append([self._again(seq) for seq in again] + [
            {"event": "dispatch", "run": self.run_id, "seq": r.seq, "node": r.node.name, "host": r.node.host,
             "command": r.command, "source": str(r.job.source) if r.job else "",
             "canonical": None if self.opts.stdin or r.job is None else r.job.canonical(), "start": r.started,
             **({"pending": pending.file, "consumed": [pending.consumed, pending.start, pending.end]}
                if pending else {})}
            for r in placed])

    def _journal_untaken(self, placed: List[Running]) -> None:
        """Jobs journalled while the queue file was saved behind the lock's
        back: the pop is abandoned and they stay queued (recovery, status and
        retry then ignore their dispatch records)."""
        self.state.journal_append([{"event": "untaken", "run": self.run_id, "seq": r.seq} for r in placed])

    def _warm_up(self) -> None:
        """A ready parallel for every host (and session group)."""
        groups = runtime.session_groups(self.nodes)
        for node in self.nodes:
            key = _key(node, groups)
            if key not in self.warm:
                self.warm[key] = backend.Warm(self.rt, node, self._slots(key, groups), key[2], self.opts.timeout)

    def _slots(self, key: Tuple[str, bool, int], groups: Dict[str, int]) -> int:
        return sum(1 for n in self.nodes if _key(n, groups) == key)

    def _launch(self, placed: List[Running]) -> List[Running]:
        by_host: Dict[Tuple[str, bool, int], List[Running]] = {}
        groups = runtime.session_groups(self.nodes)
        for running in placed:
            by_host.setdefault(_key(running.node, groups), []).append(running)
            self.busy[running.node.name] = running
            self.live[running.seq] = running
            self.tails[running.seq] = (Tail(running.out_path), Tail(running.err_path))
            self.dispatched += 1
        for key, jobs in by_host.items():
            wave = self.open.get(key)
            if wave is not None and wave.room() >= len(jobs) and wave.extend(self.rt, jobs):
                continue
            if wave is not None:  # too small now (the hosts file grew) or gone
                self._close(wave)
            self.waves.append(self._wave(key, jobs, groups))
        return placed

    def _wave(self, key: Tuple[str, bool, int], jobs: List[Running], groups: Dict[str, int]) -> Wave:
        """Start a wave, in the parallel made ready for this host if there is
        one, and make the next one ready while these jobs run."""
        group = key[2]
        slots = self._slots(key, groups)
        # Queue mode keeps the wave open for the host's next jobs; not with
        # --timeout, which parallel applies only while it is not waiting for input.
        keep_open = self.opts.mode == "q" and not self.opts.timeout
        warm = self.warm.pop(key, None)
        wave = None
        if warm is not None:
            if warm.slots >= max(slots, len(jobs)):
                wave = warm.fill(jobs, keep_open)
            else:  # the hosts file gave this host more sub-nodes
                warm.discard()
        if wave is None:
            wave = backend.start_wave(self.rt, jobs, timeout=self.opts.timeout, group=group,
                                      slots=slots, keep_open=keep_open)
        if keep_open:
            self.open[key] = wave
        if not self.stopping:
            self.warm[key] = backend.Warm(self.rt, jobs[0].node, max(slots, len(jobs)), group,
                                          self.opts.timeout)
        return wave

    def _discard_warm(self) -> None:
        for warm in self.warm.values():
            warm.discard()
        self.warm.clear()

    # -- broadcast steps -------------------------------------------------
    def _start_step(self) -> None:
        placed: List[Running] = []

        def accept(job: Job) -> None:
            _check_names(job, self.nodes)
            rendered = [(node, expand.render(job, node)) for node in self.nodes
                        if node.name not in self.leaving]
            placed.extend(self._reserve(job, node, command) for node, command in rendered)

        taken = self._take(1, accept, lambda pending: self._journal_dispatch(placed, pending),
                           lambda: self._journal_untaken(placed))
        placed = self._only_taken(placed, len(placed) if taken else 0)
        if placed:
            self.step += 1
            self.step_results.append((self.step, {}))
            self.step_jobs = self._launch(placed)

    def _step_done(self) -> None:
        number, results = self.step_results[-1]
        order = {n.name: i for i, n in enumerate(self.nodes)}
        failed = sorted(((name, code) for name, (code, sig) in results.items() if code != 0 or sig != 0),
                        key=lambda f: order.get(f[0], len(order)))  # sub-node order, not finishing order
        if failed:
            what = ", ".join(f"{name} (exit {code})" for name, code in failed)
            self.printer.say(f"step {number}: FAILED on {what}")
            if not self.opts.ignore_errors:
                self.aborted = True
        else:
            self.printer.say(f"step {number}: ok on {len(results)}/{len(results)}")
        self.step_jobs = []

    # -- the end -----------------------------------------------------------
    def _settle_unrun(self) -> None:
        """The run ends (stopped, or no host left) before jobs waiting to run
        again, or input lines, got a sub-node: none is dropped unsaid. A
        --retries job counts as the failure it was; a queue job goes back to
        the top of the queue file; an input line is named as not run."""
        waiting, self.retry = self.retry, []
        self.summary.failed += [failure for _, _, failure in waiting if failure is not None]
        if waiting and not self.opts.stdin:
            seqs = [seq for _, seq, _ in waiting]
            try:
                self.source.add([job.canonical() for job, _, _ in waiting], front=True, timeout=10,
                                note=WAITING_BACK + "".join(f"#{seq} " for seq in seqs) + f"(run {self.run_id})")
            except Exception as err:  # the lock held too long, or the file cannot be written
                for job, _, _ in waiting:
                    self.printer.say(f"not run again ({err}): {_one_line(job.command)}")
                self.summary.not_run += len(waiting)
            else:
                self.state.journal_append([self._again(seq) for seq in seqs], sync=False)
                self.printer.say(f"{len(waiting)} job(s) waiting to run again put back at the top of "
                                 f"{self.opts.queue_file}: " + ", ".join(f"#{seq}" for seq in seqs))
            return
        for job, _, failure in waiting:
            if failure is None:
                self.printer.say(f"not run again (pegpar stopped first): {_one_line(job.command)}")
                self.summary.not_run += 1
        unread = self.source.pending() if self.opts.stdin and self.queue_error is None else 0
        if unread:
            self.printer.say(f"{unread} input line(s) not run (pegpar stopped first)")
            self.summary.not_run += unread

    def _finish(self) -> int:
        self._settle_unrun()
        self.printer.clear_status()
        s = self.summary
        elapsed = time.time() - s.started
        failed = len(s.failed)
        self.printer.say(f"{s.done + failed} job(s) run, {failed} failed"
                         + (f" ({s.killed} killed)" if s.killed else "")
                         + (f", {s.requeued} re-queued from down hosts" if s.requeued else "")
                         + (f", {s.not_run} not run" if s.not_run else "")
                         + f", {elapsed:.1f} s")
        for f in s.failed:
            how = f"signal {f.signal}" if f.signal else f"exit {f.exitval}"
            self.printer.say(f"  FAILED #{f.seq} on {f.node} ({how}): {_one_line(f.command)}"
                             + (f": {f.reason}" if f.reason else ""))
        if self.opts.mode == "b" and failed:
            self._print_step_table()
        if self.aborted:
            self.printer.say("stopped after the failed step; the rest of the queue is untouched")
        for host, seqs in sorted(self.left_behind.items()):
            self.printer.say(f"job(s) {', '.join(f'#{seq}' for seq in seqs)} ran again elsewhere and may still "
                             f"run on {host}, which has not answered since; the next pegpar run on this queue "
                             "that reaches it kills them there")
        if self.queue_error is not None:  # stopped while waiting for a fix
            what = "input" if self.opts.stdin else "queue"
            self.printer.say(f"the {what} still has an error: {self.queue_error}")
            return 2
        return 1 if failed or s.not_run or s.unreachable else 0

    def _print_step_table(self) -> None:
        names = [n.name for n in self.nodes]
        rows = []
        for number, results in self.step_results:
            cells = []
            for name in names:
                code, sig = results.get(name, (None, 0))
                cells.append("-" if code is None else ("ok" if code == 0 and sig == 0 else f"exit {code}"))
            rows.append((str(number), cells))
        widths = [max([len(name)] + [len(cells[i]) for _, cells in rows]) for i, name in enumerate(names)]
        self.printer.say("  ".join(["step"] + [n.ljust(w) for n, w in zip(names, widths)]).rstrip())
        for number, cells in rows:
            self.printer.say("  ".join([number.ljust(4)] + [c.ljust(w) for c, w in zip(cells, widths)]).rstrip())


def _key(node: SubNode, groups: Dict[str, int]) -> Tuple[str, bool, int]:
    """Which wave a sub-node's jobs go to: its host and its shared connection."""
    return (node.host, node.local, 0 if node.local else groups.get(node.name, 0))


def _check_names(job: Job, nodes: Sequence[SubNode]) -> None:
    """A command parameter may not be named `hostname` nor shadow a host parameter."""
    host_names = {"hostname"} | {k for n in nodes for k, _ in n.params}
    for name, _ in job.params:
        if name in host_names and job.source.path == "<stdin>":  # `line`, the input line
            raise UserError(f"a host parameter is named `{name}`, which names the input line of a command "
                            "given after --; rename that host parameter", where=str(job.source))
        if name in host_names:
            what = "`hostname` is set by the sub-node" if name == "hostname" else \
                "it is also a host parameter in the hosts file"
            raise UserError(f"command parameter `{name}` collides: {what}; rename one of them",
                            where=str(job.source))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _queue_job(record: dict) -> Optional[Job]:
    """The queue job a dispatch record names, rebuilt from its canonical form
    (None for a job read from stdin): a job followed after a restart gets
    --retries and the re-run after a node death like any other."""
    canonical = record.get("canonical")
    if canonical is None:
        return None
    path, _, line = str(record.get("source") or "").rpartition(":")
    source = spec.Source(path, int(line)) if path and line.isdigit() else spec.Source("journal", record["seq"])
    try:
        return next(expand.jobs(spec.queue_entry_from_object(canonical, source)), None)
    except UserError:
        return None


def _one_line(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


def _mtime(path: Optional[str]) -> float:
    """When the file last changed, its permissions included (ctime)."""
    try:
        return os.stat(path).st_ctime if path else 0.0
    except OSError:
        return 0.0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def load_nodes(opts: Options) -> List[SubNode]:
    entries = spec.load_hosts(opts.hosts_file)
    return list(expand.subnodes(entries, opts.local_slots))


def run(opts: Options, source, printer: Optional[Printer] = None) -> int:
    """Run queue or broadcast mode to the end; returns the exit code."""
    printer = printer or Printer(quiet=opts.quiet, progress=opts.progress)
    nodes = load_nodes(opts)
    controller = Controller(opts, nodes, source, printer)
    controller.install_signals()
    return controller.run()
