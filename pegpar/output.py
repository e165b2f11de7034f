"""What the user sees: job output lines under a `[sub-node]` prefix, colours, messages.

Job output is read from each job's own files as they grow, so lines from
different jobs never mix, and a job's last line without a newline is printed
whole (with a newline) when the job ends.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, TextIO

_COLOURS = [32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return "NO_COLOR" not in os.environ and stream.isatty()


def prefix(name: str, index: int, colour: bool) -> str:
    text = f"[{name}]"
    if colour:
        return f"\033[{_COLOURS[index % len(_COLOURS)]}m{text}\033[0m"
    return text


class Tail:
    """The growing output file of one running job, read in whole lines."""

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._partial = b""

    def _read(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return b""
        return self._file.read()

    def lines(self, final: bool = False) -> List[str]:
        """Complete lines written since the last call; with final=True also
        the last line without a newline, and the file is closed."""
        data = self._partial + self._read()
        parts = data.split(b"\n")
        self._partial = parts.pop()
        if final:
            if self._partial:
                parts.append(self._partial)
            self._partial = b""
            if self._file is not None:
                self._file.close()
                self._file = None
        return [p.decode("utf-8", "replace") for p in parts]


class Printer:
    """Writes prefixed job lines and pegpar's own messages; owns the terminal."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr, quiet: bool = False,
                 progress: bool = True):
        self.out = out
        self.err = err
        self.colour = use_colour(out)
        self.quiet = quiet
        # the progress line lives on a terminal only, as the last line of the screen
        self.progress = progress and out.isatty()
        self._status = ""
        self._index: Dict[str, int] = {}

    def job_lines(self, node_name: str, lines: List[str], stream: Optional[TextIO] = None) -> None:
        if not lines or self.quiet:
            return
        index = self._index.setdefault(node_name, len(self._index))
        tag = prefix(node_name, index, self.colour)
        self._write(stream or self.out, "".join(f"{tag} {line}\n" for line in lines))

    def say(self, text: str) -> None:
        """pegpar's own message, on stderr so stdout stays the jobs' output."""
        self._write(self.err, f"pegpar: {text}\n")

    def status(self, text: str) -> None:
        """Replace the progress line (no-op unless on a terminal)."""
        if self.progress and text != self._status:
            self._status = text
            self.out.write(f"\r\033[K{text}")
            self.out.flush()

    def clear_status(self) -> None:
        if self.progress and self._status:
            self.out.write("\r\033[K")
            self.out.flush()
            self._status = ""

    def _write(self, stream: TextIO, text: str) -> None:
        """Lines go above the progress line: erase it, write, draw it again."""
        if self.progress and self._status:
            self.out.write("\r\033[K")
            self.out.flush()
        stream.write(text)
        stream.flush()
        if self.progress and self._status:
            self.out.write(self._status)
            self.out.flush()


def brief(text: str) -> str:
    """A command in a message: one line, at most 80 characters."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


def clock(seconds: float) -> str:
    """M:SS, or H:MM:SS from an hour on."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
