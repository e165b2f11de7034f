"""The one exception type for mistakes a user can make (files, flags, hosts)."""

from __future__ import annotations

from typing import Optional, Sequence


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits 2.

    `where` is "FILE:LINE" (or just "FILE") when the problem is in a file.
    """

    def __init__(self, message: str, where: Optional[str] = None, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class NotYet(UserError):
    """Raised by a queue's `accept` for a job that only busy sub-nodes can run:
    taking stops there, and the job waits in the queue without an error."""


class Several(UserError):
    """Several problems found at once (bad entries of a queue file): the CLI
    prints one line for each."""

    def __init__(self, problems: Sequence[UserError], more: bool = False):
        super().__init__(problems[0].message, problems[0].where, problems[0].hint)
        self.problems = list(problems)
        self.more = more

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems]
        if self.more:
            lines.append(f"more entries than these {len(lines)} have errors")
        if len(lines) > 1:
            lines.append("nothing was run; fix them and run again")
        return "\npegpar: ".join(lines)
