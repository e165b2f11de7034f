"""The reconcile loop: desired state (the queue, the hosts) against observed
state (the joblogs of running waves), for queue mode and broadcast mode.

Each turn of the loop: act on signals; read what jobs printed and which jobs
ended (each wave's joblog), and record them in the main joblog; once a
second, write the status snapshot and serve control requests; follow the
hosts' health and hosts.yaml; then, when sub-nodes are free and dispatching
is allowed, take jobs from the queue, place them (placement.py) and hand
them to GNU parallel (waves.py). Signals only set flags; the loop acts on
them. What the loop wires together lives elsewhere: the hosts' health in
health.py, crash recovery in recovery.py, broadcast steps in broadcast.py,
the user's summary in report.py, the dispatch turn in dispatch.py.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from pegpar import backend, expand, halt, joblog, proc, queuecheck, recovery, remote, report, runtime, spec
from pegpar.admission import Admission, Limits
from pegpar.backend import Running, Wave
from pegpar.broadcast import Steps
from pegpar.dispatch import Dispatching
from pegpar.errors import Several, UserError
from pegpar.expand import SubNode
from pegpar.health import Health, load_nodes
from pegpar.meter import Meter
from pegpar.outcome import Outcomes, print_output, unlink
from pegpar.output import Printer, Style, Tail
from pegpar.report import Summary
from pegpar.state import StateDir, state_dir_for
from pegpar.watch import Watch
from pegpar.waves import Waves

KILL_GRACE = 4.0  # seconds for jobs to die on their nodes before parallel is told to kill
TICK = 0.05  # seconds between turns while jobs run
FAST_TICK = 0.005  # right after a job ended: the next ones may end soon (short jobs)
SLOW_EVERY = 1.0  # status snapshot, hosts file and control requests
# How often the output of running jobs is read (a job's last output is read when
# it ends): not every turn, whose cost would grow with the jobs running.
OUTPUT_EVERY = 0.2
IDLE_TICK = 0.2  # while nothing runs: a new entry still starts well within 1 s
QUIET_WAIT = 0.2  # the longest wait between turns while jobs run and nothing changes (watch.py)


WARM_BEFORE_CHECKS = 8  # hosts up to which GNU parallels start while the hosts are checked


@dataclass
class Options:
    mode: str = "q"  # "q" queue mode, "b" broadcast mode
    queue_file: str = "queue.yaml"
    hosts_file: str = "hosts.yaml"
    ssh_config: Optional[str] = None
    joblog: Optional[str] = None  # default: STATE_DIR/joblog
    input_joblog: Optional[str] = None  # input runs' --joblog: GNU parallel's, Seq the position in the input
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
    backfill: bool = False  # later jobs may start while the head waits for slots (placement.target)
    max_load: Optional[float] = None  # a host over this load takes no new job (admission.py)
    memfree: Optional[int] = None  # nor one with fewer bytes of memory free
    halt: Optional[Tuple[str, str, int, bool]] = None  # --halt: (now | soon, fail | success | done, N, %)
    hosts: Optional[Tuple[spec.HostEntry, ...]] = None  # named on the command line (-S): no hosts file
    announce: str = ""  # said once, when the first job starts
    output: Style = Style()  # how job output is printed: `[sub-node]` lines, or as GNU parallel does
    meter: Optional[str] = None  # input runs: --bar, --eta or --progress on stderr (meter.py)


class Controller(Dispatching):
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
        self.health = Health(self)
        self.waves = Waves(self)
        self.steps = Steps(self)
        self.outcomes = Outcomes(self)
        self.admission = Admission(self, Limits(opts.max_load, opts.memfree))
        self.next_slow = 0.0
        self.status_text = report.StatusText()
        self.next_output = 0.0
        self._queued_mtime = -1.0
        self._queued_count: Optional[int] = None
        self.joblog_path = opts.joblog or os.path.join(self.state.path, "joblog")
        self.next_seq = joblog.last_seq(self.joblog_path) + 1
        self.busy: Dict[int, Running] = {}  # seq -> a job that holds its sub-node's slots
        # --backfill: the waiting head job (its key) and the sub-node promised to it
        self.reservation: Optional[Tuple[tuple, str]] = None
        self._fruitless: Optional[tuple] = None  # what the last take that found no job saw
        self.full: Optional[tuple] = None  # what the last dispatch saw when no sub-node was free
        self.live: Dict[int, Running] = {}  # seq -> job, until its end is recorded
        self.released = 0  # sub-nodes freed by a job's reported end, before its record
        self.tails: Dict[int, Tuple[Tail, Tail]] = {}
        self.meter: Optional[Meter] = Meter(opts.meter, sys.stderr) if opts.meter else None
        self._meter_begun = False
        self.watch: Optional[Watch] = None  # which output, joblog and .done files changed (start)
        self.summary = Summary(started=time.time())
        self.stopping = False  # no new jobs; running ones finish
        self.killing = False  # kill running jobs, then exit
        self.aborted = False  # broadcast: a step failed
        self.halted: Optional[int] = None  # --halt reached: the exit status it gives
        self.dispatched = 0
        self.queue_error: Optional[str] = None
        self.queue_error_mtime = 0.0
        self.held_back = False  # the whole queue is checked again before anything is taken
        self.killers: list = []
        self.kill_deadline = 0.0
        self.pending_signals: List[str] = []

    # -- signals ---------------------------------------------------------
    def install_signals(self) -> None:
        """Handlers only note the signal; the loop acts on it at the start of
        its next turn, never in the middle of a pop or a launch."""
        def note(action):
            def handler(signum, frame) -> None:
                self.pending_signals.append(action)
                self._wake()
            return handler

        # a child's exit (a host check, the fork server) ends the wait between
        # turns; a wave's parallel, forked by the server, ends with a file (watch)
        signal.signal(signal.SIGCHLD, lambda signum, frame: self._wake())
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

    def stop(self, by_ctrl_c: bool = True, why: str = "") -> None:
        """No new jobs; the running ones finish. `why`: said instead of how to kill them."""
        if not self.stopping:
            self.stopping = True
            self.waves.discard_warm()
            self.waves.close_open()
            how = "Ctrl-C again" if by_ctrl_c else "`pegpar stop --kill`"
            self.printer.say(f"stopping: no new jobs; waiting for {len(self.busy)} running "
                             + (f"({why})" if why else f"({how} kills them)"))

    def kill(self) -> None:
        self.stopping = True
        if not self.killing:
            self.killing = True
            self.waves.close_open()
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
                          "hosts_file": self.opts.hosts_file and os.path.abspath(self.opts.hosts_file),
                          "run": self.run_id})
        self.rt = runtime.runtime(self.state.path, self.opts.ssh_config, self.opts.connect_timeout)
        # a job's end report, a wave's joblog or its exit can free a sub-node: they end a wait at once
        self.watch = Watch([self.rt.logs_dir, self.rt.waves_dir], urgent=(".done", ".joblog", ".exit"))
        self.next_seq = max(self.next_seq, self.rt.last_seq() + 1)
        backend.forget_unfilled(self.rt)
        found = recovery.recover(self)
        # One atomic rewrite: the seqs given out so far, this run, and the jobs it
        # follows (a crash now still finds them).
        self.state.journal_reset([{"event": "seqs", "seq": self.next_seq - 1},
                                  {"event": "run", "run": self.run_id, "pid": os.getpid(),
                                   "started": time.time(), "mode": self.opts.mode,
                                   "queue_file": os.path.abspath(self.opts.queue_file)}]
                                 + [dict(r, run=self.run_id)
                                    for r in found.followed + found.recorded + self.health.carried])
        for left in found.dead_waves:
            left.remove()
        for path in found.unreplaced:
            unlink(path)
        # The hosts' GNU parallels start (forked, a few hundredths of a second of
        # CPU each) while a few hosts are checked; with many, their checks come
        # first, so that no check fails for want of CPU here
        few = len({n.host for n in self.nodes}) <= WARM_BEFORE_CHECKS
        if few:
            self.waves.warm_up()
        self.health.check(self.nodes, at_start=True)
        if not few:
            self.waves.warm_up()
        for host in list(self.health.left_behind):
            if host not in self.health.down:
                self.health.kill_left(host)

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        try:
            self.start()
            return self._loop()
        finally:
            self.waves.discard_warm()
            self.admission.stop()
            if self.watch is not None:
                self.watch.close()
            self.state.release()

    def _loop(self) -> int:
        tick = TICK
        while True:
            finished_before = self.summary.finished + self.released
            self._handle_signals()
            self._observe()
            self.outcomes.check_halt()
            # a sub-node just freed: dispatch at once, sleep only when idle
            progressed = self.summary.finished + self.released != finished_before
            if time.time() >= self.next_slow:
                self.next_slow = time.time() + SLOW_EVERY
                self._slow_turn()
            self.health.check_suspects()
            self.health.probe_down()
            self.health.reload_hosts()
            self.admission.turn()
            self.killers = [k for k in self.killers if k.poll() is None]
            if self.killing:
                if time.time() > self.kill_deadline:
                    self.waves.terminate()  # a node that did not answer: cut its ssh
                if not self.waves.waves:
                    self.health.settle_suspects()
                    break
            elif not self.stopping and not self.aborted:
                self._dispatch()
            self.waves.close_unflushed()
            self._draw_meter()
            if not self.busy and not self.waves.waves and not self.health.suspects:
                if self.stopping or self.aborted:
                    break
                if not self.opts.daemon and self.source.is_empty():
                    break
                if self.queue_error is not None and not self.opts.daemon:
                    if not self.dispatched:  # before anything ran: an input error, one line
                        raise UserError(self.queue_error)
                    break  # nothing runs and no fix came: no waiting forever (exit 2, _finish)
                if self.nodes and all(n.host in self.health.down for n in self.nodes) and not self.opts.daemon:
                    self.printer.say("no host can be reached; giving up")
                    self.summary.unreachable = True
                    break
            if progressed:
                tick = FAST_TICK
            else:
                self._pause(tick)
                tick = min(TICK, tick * 1.5)
        self._await_killers()
        return self._finish()

    def _wake(self) -> None:
        if self.watch is not None:
            self.watch.wake()

    def _pause(self, tick: float) -> None:
        """Between two turns. While jobs run, until a job reports its end, a
        joblog gains a record, a wave's parallel ends (its `.exit` file: its
        host's slots may take a new wave), a child process exits or a signal
        comes; until at least `tick` after the jobs' output changed (however
        much they write); at most QUIET_WAIT, or until the next slow turn when
        no sub-node is free: with nothing happening, a few turns a second, and
        one when every sub-node is busy, whatever the number of running jobs."""
        if not (self.busy or self.waves.waves):
            time.sleep(IDLE_TICK)
            return
        quiet = QUIET_WAIT
        if self.full is not None and not (self.killing or self.stopping or self.aborted):
            # no sub-node free: a change of the queue file waits for one, which
            # a watched file or a child's exit tells; the slow turn comes on time
            quiet = max(QUIET_WAIT, self.next_slow - time.time())
        # a child's exit or a signal ends the wait too; without inotify, `tick`
        if self.watch is None or not self.watch.wait(quiet, settle=tick):
            time.sleep(tick)

    def _draw_meter(self, final: bool = False) -> None:
        """--bar, --eta, --progress: begun once the input's total is known
        where it is needed, then drawn as jobs start and end."""
        meter = self.meter
        if meter is None:
            return
        if not self._meter_begun:
            total = self.source.total()
            if meter.needs_total and total is None and not final:
                return
            self._meter_begun = True
            hosts = collections.Counter((n.host, n.local) for n in self.nodes)
            meter.begin([(host, local, count) for (host, local), count in hosts.items()], total or 0)
        meter.draw(final=final)

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
        self.state.write_status(self.status_text.text(self))
        if self.printer.progress:
            self.printer.status(report.progress(self.summary, len(self.busy), self._queued(), len(self.nodes)))

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

    # -- observing -------------------------------------------------------
    def _observe(self) -> None:
        # the files written since the last turn (None: unknown, so all are read)
        changed = self.watch.changed() if self.watch is not None else None
        if changed is not None:
            self._changed_output(changed)
        elif self.tails and time.time() >= self.next_output:
            # each file is a read: with many jobs running, their output is read less often
            self.next_output = time.time() + OUTPUT_EVERY * max(1.0, len(self.tails) / 128)
            for seq, (out, err) in self.tails.items():
                job = self.live.get(seq)
                if job is not None:
                    print_output(self, job, out, err, final=False)
        # A wave's parallel tells its end by its `.exit` file (the fork server's):
        # looked at when it changed, and once a second for all (a parallel whose
        # server died writes none); not every turn for every host.
        every = changed is None or time.time() >= self.next_slow
        for wave in list(self.waves.waves):
            # before reading: a record written just before exit is not missed
            exited = wave.exited() if every or wave.exit_path in changed else False
            if changed is None or wave.ends_path in changed:
                self._ends(wave)
            due = wave.records_due() if changed is None else wave.follower.path in changed
            for job, rec in wave.new_records() if exited or due else ():
                self.outcomes.finished(job, rec)
            if exited:
                for job in wave.unfinished():
                    self.outcomes.finished(job, None)
                if not self.killing:
                    for line in wave.messages():  # GNU parallel's own: "parallel: Warning: ..."
                        self.printer.say(line if line.startswith("parallel: ") else f"parallel: {line}")
                self.waves.remove(wave)
        if self.opts.mode == "b":
            self.steps.check_done({j.seq for j in self.busy.values()})

    def _changed_output(self, changed: Set[str]) -> None:
        """Output of the running jobs whose files changed (named `SEQ.sub-node`)."""
        for path in changed:
            seq = os.path.basename(path).split(".", 1)[0]
            if seq.isdigit() and int(seq) in self.tails and os.path.dirname(path) == self.rt.logs_dir:
                job = self.live.get(int(seq))
                if job is not None:
                    out, err = self.tails[int(seq)]
                    print_output(self, job, out, err, final=False)

    def _ends(self, wave: Wave) -> None:
        """Jobs of an open wave that reported their end: their sub-nodes are
        free at once (their records follow when the wave gets input or is
        closed). A remote job that ended with ssh's failure or a signal keeps
        its sub-node until its record says whether the host died: the wave is
        closed so that the record comes now."""
        for job, status in wave.new_ends():
            # --halt counts from records: a job that counts for it holds its sub-node until its record
            if (not job.node.local and status > 128) or halt.counts(self.opts.halt, status):
                self.waves.close(wave)
                continue
            if self.busy.get(job.seq) is job:
                del self.busy[job.seq]
                wave.unflushed += 1
                self.released += 1

    # -- the end -----------------------------------------------------------
    def _finish(self) -> int:
        self.outcomes.settle_unrun()
        self.printer.clear_status()
        self._draw_meter(final=True)
        s = self.summary
        self.printer.flush_held()
        quiet = self.printer.style.mode != "prefix" and not (s.failed or s.not_run or s.unreachable)
        for line in [] if quiet else report.final(s):  # input run as parallel's: silent when all went well
            self.printer.say(line)
        if self.opts.mode == "b" and s.failed:
            for line in self.steps.table():
                self.printer.say(line)
        if self.aborted:
            self.printer.say("stopped after the failed step; the rest of the queue is untouched")
        for host, seqs in sorted(self.health.left_behind.items()):
            self.printer.say(f"job(s) {', '.join(f'#{seq}' for seq in seqs)} ran again elsewhere and may still "
                             f"run on {host}, which has not answered since; the next pegpar run on this queue "
                             "that reaches it kills them there")
        if self.queue_error is not None:  # stopped while waiting for a fix
            what = "input" if self.opts.stdin else "queue"
            self.printer.say(f"the {what} still has an error: {self.queue_error}")
            return 2
        if self.halted is not None:
            return self.halted
        if self.opts.stdin and s.failed:  # as GNU parallel: how many failed (at most 101)
            return halt.unreached_status(self.opts.halt, len(s.failed), self.dispatched)
        return 1 if s.failed or s.not_run or s.unreachable else 0


def run(opts: Options, source, printer: Optional[Printer] = None) -> int:
    """Run queue or broadcast mode to the end; returns the exit code."""
    proc.raise_open_files()
    printer = printer or Printer(quiet=opts.quiet, progress=opts.progress, style=opts.output)
    nodes = load_nodes(opts)
    problems = [] if opts.stdin else queuecheck.check(opts.queue_file, nodes, every_node=opts.mode == "b")
    if problems and not opts.daemon:  # before anything runs, every entry: a bad one is an input error
        raise Several(problems[:queuecheck.MAX_LISTED], more=len(problems) > queuecheck.MAX_LISTED)
    controller = Controller(opts, nodes, source, printer)
    if problems:
        controller.hold(problems)
    controller.install_signals()
    return controller.run()
