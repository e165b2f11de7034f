"""--halt of a run on input, by GNU parallel's rules (its should_we_halt and
halt): when it is reached, and the exit status it gives.

`now|soon,fail|success|done=N`: reached once N jobs failed (succeeded,
ended); `=N%`: once that many of all the jobs did (the input is read whole
first, as parallel does). The exit status, for fail and done: the job's own
when N is 1 (or N% of the jobs is exactly one), else the percentage of all
jobs that failed (rounded up) for N%, else the number of failed jobs (at most
101); for success, 0. A run that ends without reaching it exits as parallel
does: with the number of failed jobs, or with N%, the percentage of the
started jobs that failed.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

Halt = Tuple[str, str, int, bool]  # (now | soon, fail | success | done, N, N is a percentage)


def limit(what: str, failed: int, finished: int) -> int:
    """The jobs that count for `--halt ...,what=`: failed, succeeded or ended."""
    return {"fail": failed, "success": finished - failed, "done": finished}[what]


def reached(halt: Halt, failed: int, finished: int, total: Optional[int], job_status: int) -> Optional[int]:
    """The exit status once the condition holds, None before. `total`: all
    the jobs (None while the input is being read); `job_status`: that of the
    job that ended last (for fail, the last that failed)."""
    _, what, n, percent = halt
    so_far = limit(what, failed, finished)
    if percent and not total:
        return None
    count = total * (n / 100) if percent else n  # as parallel computes it
    if so_far == 0 or so_far < count:
        return None
    if what == "success":
        return 0
    if count == 1:
        return job_status
    if percent:
        return math.ceil(failed / total * 100)
    return min(failed, 101)


def counts(halt: Optional[Halt], status: int) -> bool:
    """Whether a job that ended with `status` counts towards --halt."""
    if halt is None:
        return False
    return {"fail": status != 0, "success": status == 0, "done": True}[halt[1]]


def unreached_status(halt: Optional[Halt], failed: int, started: int) -> int:
    """The exit status of a run on input with failed jobs that did not halt."""
    if halt is not None and halt[3]:
        return math.ceil(failed / max(started, 1) * 100)
    return min(failed, 101)
