"""`pegpar retry --failed`: put the failed jobs of the last run back into queue.yaml.

The journal knows each dispatched job's canonical form (the YAML object that
runs it again) and the joblog knows how each ended. A failed job goes back at
the end of the queue, under the queue lock, so `pegpar q` (or the controller
still running) runs it again. Skipped, and said so: jobs from stdin (they have
no queue form), jobs that ran again later in the same run (pegpar's own
retries, or a host that went down; their last attempt counts), and jobs that
are already waiting in the queue (so a second `pegpar retry` adds nothing).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from pegpar import joblog, spec
from pegpar.errors import UserError
from pegpar.logview import local_time, one_line
from pegpar.spec import QueueEntry, Source
from pegpar.state import Run, StateDir, entry_key, state_dir_for


@dataclass
class Plan:
    """The failed jobs of a run, sorted by what retry does with them."""

    requeue: List[Dict[str, Any]] = field(default_factory=list)  # dispatch records
    from_stdin: List[Dict[str, Any]] = field(default_factory=list)
    ran_again: List[Dict[str, Any]] = field(default_factory=list)
    queued: List[Dict[str, Any]] = field(default_factory=list)


def results(run: Run, records: List[joblog.Record]) -> Dict[int, Tuple[int, int]]:
    """seq -> (exitval, signal) for the run's jobs that ended: the journal's done
    records, else the joblog's (a controller that died before journalling)."""
    out = {r.seq: (r.exitval, r.signal) for r in records if r.seq in run}
    for seq, done in run.done.items():
        out[seq] = (int(done.get("exitval", 0)), int(done.get("signal", 0)))
    return out


def plan(run: Run, ended: Dict[int, Tuple[int, int]], waiting: Tuple[QueueEntry, ...]) -> Plan:
    """Sort the run's failed jobs (pure: `waiting` is what the queue holds now)."""
    result = Plan()
    broadcast = run.info.get("mode") == "b"
    taken = set()
    for seq, d in sorted(run.dispatched.items()):
        exitval, sig = ended.get(seq, (0, 0))
        if exitval == 0 and sig == 0:
            continue
        canonical = d.get("canonical")
        key = entry_key(canonical)
        if canonical is None:
            result.from_stdin.append(d)
        elif seq in run.again:  # pegpar ran it again: its last attempt counts
            result.ran_again.append(d)
            continue
        elif broadcast and key in taken:
            continue  # one step ran on every sub-node: queue it once
        elif _waiting(spec.queue_entry_from_object(canonical, Source("journal", seq)), waiting):
            result.queued.append(d)
        else:
            result.requeue.append(d)
        taken.add(key)
    return result


def _waiting(job: QueueEntry, entries: Tuple[QueueEntry, ...]) -> bool:
    """Whether one job's combination is among the products the queue holds.
    Values compare with their YAML types: 1, 1.0, true and "1" differ."""
    want = dict(job.dims)
    for entry in entries:
        have = dict(entry.dims)
        if have.keys() == want.keys() and all(
                any(type(v) is type(want[k][0]) and v == want[k][0] for v in have[k]) for k in want):
            return True
    return False


def retry_failed(queue_file: str) -> str:
    """`pegpar retry --failed`: re-queue the last run's failed jobs; says what it did."""
    from pegpar.queue import QueueFile

    state = StateDir(state_dir_for(queue_file))
    run = state.last_run()
    if run is None:
        raise UserError("no run is recorded for this queue, so nothing to retry", where=queue_file,
                        hint="`pegpar retry` re-queues the failed jobs of the last `pegpar q` or `pegpar b`")
    waiting = spec.load_queue(queue_file) if os.path.exists(queue_file) else ()
    todo = plan(run, results(run, joblog.read(state.joblog_path())), waiting)
    started = run.info.get("started")
    which = f"the last run (started {local_time(started)})" if isinstance(started, (int, float)) \
        else "the last run"
    lines = []
    if todo.requeue:
        QueueFile(queue_file).add([d["canonical"] for d in todo.requeue], front=False)
        lines.append(f"{len(todo.requeue)} failed job(s) of {which} put back at the end of "
                     f"{queue_file}: " + ", ".join(f"#{d['seq']}" for d in todo.requeue))
        lines.append(_next_step(state, run, queue_file))
    elif not (todo.from_stdin or todo.ran_again or todo.queued):
        lines.append(f"no job failed in {which}: nothing to retry")
    else:
        lines.append(f"nothing put back into {queue_file}")
    for d in todo.from_stdin:
        lines.append(f"  #{d['seq']} came from stdin and has no queue form; skipped: "
                     f"{one_line(str(d.get('command', '')), 80)}")
    for d in todo.ran_again:
        lines.append(f"  #{d['seq']} ran again later in that run; its last attempt counts")
    for d in todo.queued:
        lines.append(f"  #{d['seq']} is already waiting in {queue_file}; skipped")
    return "\n".join(line for line in lines if line) + "\n"


def _next_step(state: StateDir, run: Run, queue_file: str) -> str:
    ctl = state.controller()
    if ctl is None:
        mode = "b" if run.info.get("mode") == "b" else "q"
        named = "" if os.path.abspath(queue_file) == os.path.abspath("queue.yaml") \
            else f" --queue-file {shlex.quote(queue_file)}"  # the default is ./queue.yaml
        return f"run `pegpar {mode}{named}` to run them"
    if ctl.get("mode") == "q":
        return f"the running pegpar (pid {ctl.get('pid')}) picks them up"
    return f"a pegpar (pid {ctl.get('pid')}) is running in broadcast mode on {queue_file}"
