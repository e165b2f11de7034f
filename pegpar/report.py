"""What a run tells the user about itself: the counts kept while it runs, the
progress line, and the summary at its end (with each failure named)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

from pegpar.output import brief, clock


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
             + (f", {s.not_run} not run" if s.not_run else "")
             + f", {time.time() - s.started:.1f} s"]
    for f in s.failed:
        how = f"signal {f.signal}" if f.signal else f"exit {f.exitval}"
        lines.append(f"  FAILED #{f.seq} on {f.node} ({how}): {brief(f.command)}"
                     + (f": {f.reason}" if f.reason else ""))
    return lines
