"""Crash recovery: what an earlier controller of this queue left unfinished.

The journal names every job a controller dispatched; the joblog and the
waves' own files say which of them ended. At start, each unfinished job is
followed to its end when its GNU parallel still runs, recorded when it ended
while no pegpar was watching, and otherwise reported as interrupted and put
back at the top of the queue file (once: a recovery cut short finds its own
comment there).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from pegpar import backend, expand, joblog, spec
from pegpar.backend import Running
from pegpar.errors import UserError
from pegpar.expand import Job
from pegpar.output import Tail, brief
from pegpar.state import highest_seq

if TYPE_CHECKING:
    from pegpar.controller import Controller

PUT_BACK = "pegpar put back interrupted jobs: "  # the comment above them in the queue file


@dataclass
class Recovered:
    followed: List[dict] = field(default_factory=list)  # dispatch records of jobs still running
    recorded: List[dict] = field(default_factory=list)  # journal records of jobs that ended while no pegpar ran
    dead_waves: List[backend.LeftWave] = field(default_factory=list)  # removed once the journal is reset
    unreplaced: List[str] = field(default_factory=list)  # queue files a crash left unrenamed: likewise


def recover(ctl: "Controller") -> Recovered:
    """Jobs dispatched by an earlier controller that never recorded their end:
    followed to their end when their wave still runs, recorded when it has
    ended, else reported as interrupted and queued again."""
    out = Recovered()
    records = ctl.state.journal()
    # A seq given out stays used even when the joblog never got it: reused, it
    # would share wave files, job id and log files with a job that may still run.
    ctl.next_seq = max(ctl.next_seq, highest_seq(records) + 1)
    ctl.health.take_over_left(records)
    done = {r["seq"] for r in records if r.get("event") in ("done", "untaken")}
    pending = list({r["seq"]: r for r in records if r.get("event") == "dispatch" and r["seq"] not in done}
                   .values())
    # a recovery cut short (pegpar killed again) may have recorded some already
    recorded = {rec.seq: rec for rec in joblog.read(ctl.joblog_path)} if pending else {}
    names = {n.name for n in ctl.nodes}
    waves: Dict[str, Tuple[backend.LeftWave, List[dict]]] = {}
    ended: List[Tuple[Optional[backend.LeftWave], dict]] = []
    for r in pending:
        if r["seq"] in recorded:  # by a recovery cut short: this run's journal still gets it
            rec = recorded[r["seq"]]
            out.recorded += [r, {"event": "done", "seq": r["seq"], "exitval": rec.exitval, "signal": rec.signal}]
            continue
        left = backend.left_wave(ctl.rt, r["seq"])
        if left is not None and r["node"] in names:
            waves.setdefault(left.stem, (left, []))[1].append(r)
        else:
            ended.append((left, r))
    for left, rs in waves.values():
        if follow(ctl, left, rs):
            out.followed += rs
        else:
            ended += [(left, r) for r in rs]
    if out.followed and ctl.opts.mode == "b":
        # the step that still runs is followed to its end; the next one waits for it
        ctl.steps.follow([ctl.live[r["seq"]] for r in out.followed])
    requeue = []
    for left, r in sorted(ended, key=lambda x: x[1]["seq"]):
        if left is None and r.get("pending") and os.path.exists(r["pending"]):
            # pegpar died after journalling the job and before replacing the queue file
            ctl.printer.say(f"job #{r['seq']} on {r['node']} never left {ctl.opts.queue_file} (pegpar "
                            f"stopped while taking it); it runs from there: {brief(r['command'])}")
            # removed once the journal no longer names the job (Controller.start):
            # a crash before that must find it again
            out.unreplaced.append(r["pending"])
            if r.get("consumed"):  # it will be consumed again, from the queue file
                from pegpar.queue import unconsume

                unconsume(*r["consumed"])
            continue
        rec = left.record(ctl.rt, r["seq"]) if left is not None else None
        if rec is not None:  # it ended while no controller was watching
            joblog.append(ctl.joblog_path, [joblog.relabel(rec, r["seq"], r["node"], r["command"])])
            # this run's journal has it, ended: `retry --failed` finds it
            out.recorded += [r, {"event": "done", "seq": r["seq"], "exitval": rec.exitval, "signal": rec.signal}]
            ctl.printer.say(f"job #{r['seq']} on {r['node']} ended while pegpar was not running "
                            f"(exit {rec.exitval}); recorded")
            continue
        if left is None:  # taken from the queue, but pegpar stopped before starting it
            ctl.printer.say(f"job #{r['seq']} on {r['node']} never started (pegpar stopped first): "
                            f"{brief(r['command'])}")
        else:
            ctl.printer.say(f"job #{r['seq']} on {r['node']} was interrupted (pegpar stopped while it ran; "
                            f"it may still be running there): {brief(r['command'])}")
        if r.get("canonical") is not None:
            # a broadcast step ran on every sub-node: it goes back once
            if ctl.opts.mode != "b" or r["canonical"] not in [item for _, _, item in requeue]:
                requeue.append((r.get("run"), r["seq"], r["canonical"]))
    if requeue and ctl.opts.requeue_interrupted and not ctl.opts.stdin:
        put_back(ctl, requeue)
    # their files go once the journal no longer names their jobs (Controller.start)
    out.dead_waves = list({left.stem: left for left, _ in ended if left is not None and left.pid() is None}
                          .values())
    return out


def put_back(ctl: "Controller", requeue: List[Tuple[Optional[str], int, object]]) -> None:
    """Interrupted jobs go back to the top of the queue, under a comment
    naming them (seqs and run). A crash after this and before the journal
    is reset finds the comment and does not put them back twice."""
    done = {(run, int(seq)) for note in ctl.source.notes(PUT_BACK)
            for seqs, run in re.findall(r"((?:#\d+ )+)\(run ([^)\s]+)\)", note)
            for seq in re.findall(r"#(\d+)", seqs)}
    todo = [(run, seq, item) for run, seq, item in requeue if (run, seq) not in done]
    if todo:
        runs = dict.fromkeys(run for run, _, _ in todo)
        note = "; ".join("".join(f"#{seq} " for r, seq, _ in todo if r == run) + f"(run {run})"
                         for run in runs)
        ctl.source.add([item for _, _, item in todo], front=True, note=PUT_BACK + note)
        ctl.printer.say(f"{len(todo)} interrupted job(s) put back at the top of {ctl.opts.queue_file}")
    if len(todo) < len(requeue):
        ctl.printer.say(f"{len(requeue) - len(todo)} interrupted job(s) were put back in "
                        f"{ctl.opts.queue_file} already (by a recovery cut short)")


def follow(ctl: "Controller", left: backend.LeftWave, pending: List[dict]) -> bool:
    """Take over a wave an earlier controller started and whose parallel
    still runs; False when it has ended (its joblog is then complete)."""
    nodes = {n.name: n for n in ctl.nodes}
    jobs: List[Optional[Running]] = [None] * len(left.ids)
    for r in pending:
        node = nodes[r["node"]]
        stem = os.path.join(ctl.rt.logs_dir, backend.log_name(r["seq"], node))
        jobs[left.index(ctl.rt, r["seq"]) - 1] = Running(r["seq"], node, r["command"], stem, stem + ".err",
                                                         r.get("start") or time.time(), queue_job(r),
                                                         tuple(r.get("slots") or (0,)))
    wave = backend.adopt_wave(left, nodes[pending[0]["node"]].host, jobs)
    if wave is None:
        return False
    for job in jobs:
        if job is not None:
            ctl.printer.say(f"job #{job.seq} on {job.node.name} still runs (started before pegpar "
                            f"stopped); following it: {brief(job.command)}")
            ctl.busy[job.seq] = job
            ctl.live[job.seq] = job
            ctl.tails[job.seq] = (Tail(job.out_path), Tail(job.err_path))
            ctl.dispatched += 1
    ctl.waves.waves.append(wave)
    return True


def queue_job(record: dict) -> Optional[Job]:
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
