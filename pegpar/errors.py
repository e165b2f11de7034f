"""The one exception type for mistakes a user can make (files, flags, hosts)."""

from __future__ import annotations

from typing import Optional


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
