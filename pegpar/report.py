"""What a run tells the user about itself: the counts kept while it runs, the
progress line, and the summary at its end (with each failure named)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

from pegpar.output import brief, clock
from pegpar.state import dumps

if TYPE_CHECKING:
    from pegpar.backend import Running
    from pegpar.controller import Controller


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
    reconnected: int = 0  # jobs run again because their ssh connection died
    not_run: int = 0  # taken, then no sub-node could run it
    unreachable: bool = False

    @property
    def finished(self) -> int:
        return self.done + len(self.failed)


def progress(s: Summary, running: int, queued: Optional[int], nodes: int) -> str:
    """The status line: done (of how many, when the queue can be counted),
    running, failed, elapsed time and an estimate of what is left."""
    finished = s.finished
    elapsed = time.time() - s.started
    total = f"/{finished + running + queued}" if queued is not None else ""
    eta = ""
    if queued is not None and finished and (queued or running):
        per_job = elapsed / finished * max(1, running) / max(1, nodes)
        eta = f", ETA {clock((queued + running) * per_job)}"
    return f"[{finished}{total} done, {running} running, {len(s.failed)} failed, {clock(elapsed)}{eta}]"


def final(s: Summary) -> List[str]:
    """The run's last lines: the counts, then each failure."""
    failed = len(s.failed)
    lines = [f"{s.finished} job(s) run, {failed} failed"
             + (f" ({s.killed} killed)" if s.killed else "")
             + (f", {s.requeued} re-queued from down hosts" if s.requeued else "")
             + (f", {s.reconnected} re-queued after a lost connection" if s.reconnected else "")
             + (f", {s.not_run} not run" if s.not_run else "")
             + f", {time.time() - s.started:.1f} s"]
    for f in s.failed:
        how = f"signal {f.signal}" if f.signal else f"exit {f.exitval}"
        lines.append(f"  FAILED #{f.seq} on {f.node} ({how}): {brief(f.command)}"
                     + (f": {f.reason}" if f.reason else ""))
    return lines


def node_states(ctl: "Controller") -> List[dict]:
    """Each sub-node of the status snapshot: its state, its jobs and slots."""
    nodes = []
    jobs_of: Dict[str, List["Running"]] = {}
    for job in sorted(ctl.busy.values(), key=lambda j: j.slots):
        jobs_of.setdefault(job.node.name, []).append(job)
    for n in ctl.nodes:
        jobs = [{"seq": j.seq, "command": j.command, "since": j.started, "slots": list(j.slots)}
                for j in jobs_of.get(n.name, [])]
        held = {i for j in jobs for i in j["slots"]}
        state = ("down" if n.host in ctl.health.down else "leaving" if n.name in ctl.health.leaving
                 else "running" if jobs else "idle")
        nodes.append({"name": n.name, "host": n.host, "state": state, "job": jobs[0] if jobs else None,
                      "jobs": jobs, "slots": n.slots, "free": [i for i in range(n.slots) if i not in held],
                      **({"held": ctl.admission.held[n.host]} if n.host in ctl.admission.held else {})})
    return nodes


def snapshot(ctl: "Controller", nodes: bool = True) -> dict:
    """The status snapshot `pegpar status` reads: each sub-node, its jobs and
    slots (unless `nodes` is False), and the run's counts."""
    return {"pid": os.getpid(), "mode": ctl.opts.mode, "run": ctl.run_id,
            "queue_file": os.path.abspath(ctl.opts.queue_file),
            "hosts_file": ctl.opts.hosts_file and os.path.abspath(ctl.opts.hosts_file),
            "started": ctl.summary.started, "updated": time.time(), "joblog": os.path.abspath(ctl.joblog_path),
            **({"nodes": node_states(ctl)} if nodes else {}), "running": len(ctl.busy), "done": ctl.summary.done,
            "failed": len(ctl.summary.failed), "stopping": ctl.stopping,
            "queue_error": ctl.queue_error,
            **({"queued": ctl.source.pending()} if ctl.opts.stdin else {})}


class StatusText:
    """The status snapshot as the text status.json holds, written once a
    second: its sub-nodes' part, most of it with many jobs running, is made
    again only when a job started or left its sub-node, or a host's state
    changed."""

    def __init__(self) -> None:
        self._seen: Optional[tuple] = None
        self._nodes = ""

    def text(self, ctl: "Controller") -> str:
        seen = (ctl.occupancy(), tuple(sorted(ctl.health.down)), tuple(sorted(ctl.health.leaving)),
                tuple(sorted(ctl.admission.held.items())))
        if seen != self._seen:
            self._seen, self._nodes = seen, dumps(node_states(ctl))
        head = dumps(snapshot(ctl, nodes=False))
        return head[:-1] + ',"nodes":' + self._nodes + "}"
