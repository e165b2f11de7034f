"""Where jobs come from: queue.yaml (the file queue) or lines on stdin.

Both answer the controller's one question, "give me up to n jobs", through
the `take` of pegpar.queue.QueueFile; stdin input is a queue in memory.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Tuple

from pegpar.errors import NotYet, UserError
from pegpar.expand import Job
from pegpar.spec import Source

if TYPE_CHECKING:
    from pegpar.queue import Pending

STDIN = "<stdin>"
_USES_LINE = re.compile(r"\{\{[^}]*\bline\b")


def stdin_jobs(lines: Iterable[str], command: Optional[List[str]] = None) -> List[Job]:
    """Jobs from input lines, like xargs: each non-empty line is a command, or,
    with `command` (the words after `--`), the shell-quoted argument `line` of
    that command, appended as its last argument when it names no `{{ line }}`."""
    template = None
    if command:
        template = " ".join(command)
        if not _USES_LINE.search(template):
            template += " {{ line }}"
    jobs = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            continue
        source = Source(STDIN, number)
        if template is None:
            jobs.append(Job(command=line, params=(), source=source, plain=True))
        else:
            jobs.append(Job(command=template, params=(("line", shlex.quote(line)),), source=source))
    return jobs


def check_syntax(jobs: Iterable[Job]) -> None:
    """UserError at the first input line whose template cannot parse."""
    from pegpar import template

    for job in jobs:
        template.check_syntax(job.command, job.source)


class MemoryQueue:
    """A queue held in memory (stdin input): nothing is written anywhere."""

    def __init__(self, jobs: List[Job]):
        self._jobs = list(reversed(jobs))

    def take(self, n: int, accept: Callable[[Job], None],
             on_commit: Optional[Callable[[Optional[Pending]], None]] = None,
             on_abandon: Optional[Callable[[], None]] = None,
             skip_waiting: bool = False) -> Optional[Tuple[List[Job], Optional[UserError]]]:
        """As QueueFile.take, on the lines in memory."""
        from pegpar.queue import BACKFILL_WINDOW

        taken: List[Job] = []
        skipped: List[Job] = []  # jobs that wait, passed over (skip_waiting)
        error: Optional[UserError] = None
        while self._jobs and len(taken) < n:
            job = self._jobs.pop()
            try:
                accept(job)
            except NotYet as err:
                error = error or err
                skipped.append(job)
                if skip_waiting and len(skipped) < BACKFILL_WINDOW:
                    continue
                break
            except UserError as err:
                self._jobs.append(job)
                error = err
                break
            taken.append(job)
        self._jobs.extend(reversed(skipped))
        if taken and on_commit is not None:
            on_commit(None)  # no file to replace
        return taken, error

    def is_empty(self) -> bool:
        return not self._jobs

    def pending(self) -> int:
        return len(self._jobs)

    def mtime(self) -> float:
        return 0.0
