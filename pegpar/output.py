"""What the user sees: job output, colours, messages.

Job output is read from each job's own files as they grow, so output of
different jobs never mixes. A queue run prints each line under a
`[sub-node]` prefix as it comes (a job's last line without a newline is
printed whole, with a newline, when the job ends). A run on input, as GNU
parallel's, prints the bytes the jobs wrote, unchanged (Style): each job's
output whole when it ends (`--group`, the default), lines as they come
(`--line-buffer`) or anything as it comes (`--ungroup`); `-k` in input
order; `--tag`/`--tagstring` before each line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, TextIO

_COLOURS = [32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return "NO_COLOR" not in os.environ and stream.isatty()


def prefix(name: str, index: int, colour: bool) -> str:
    text = f"[{name}]"
    if colour:
        return f"\033[{_COLOURS[index % len(_COLOURS)]}m{text}\033[0m"
    return text


@dataclass(frozen=True)
class Style:
    """How job output is printed: "prefix" (pegpar's `[sub-node] line`), or as
    GNU parallel prints it: "group", "line-buffer", "ungroup"."""

    mode: str = "prefix"
    keep_order: bool = False
    tag: bool = False
    tagstring: Optional[str] = None

    @property
    def tagged(self) -> bool:
        return self.tag or self.tagstring is not None


class Tail:
    """The growing output file of one running job, read in whole lines."""

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._partial = b""
        self.last_line = ""  # the last whole line read (a failure's reason, for stderr)

    def chunk(self) -> bytes:
        """The bytes written since the last call (any amount)."""
        return self._read()

    def whole_lines(self, final: bool = False) -> bytes:
        """The complete lines written since the last call, as bytes; with
        final=True everything left, and the file is closed."""
        data = self._partial + self._read()
        cut = len(data) if final else data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if final:
            self.close()
        self._note_last(data[:cut])
        return data[:cut]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _note_last(self, data: bytes) -> None:
        lines = [line for line in data.split(b"\n") if line]
        if lines:
            self.last_line = lines[-1].decode("utf-8", "replace")

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
        decoded = [p.decode("utf-8", "replace") for p in parts]
        if decoded:
            self.last_line = decoded[-1]
        return decoded


class Printer:
    """Writes prefixed job lines and pegpar's own messages; owns the terminal."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr, quiet: bool = False,
                 progress: bool = True, style: Style = Style()):
        self.out = out
        self.err = err
        self.colour = use_colour(out)
        self.quiet = quiet
        self.style = style
        # the progress line lives on a terminal only, as the last line of the screen
        self.progress = progress and out.isatty() and style.mode == "prefix"
        self._status = ""
        self._index: Dict[str, int] = {}
        self._held: Dict[int, List[tuple]] = {}  # -k: output of jobs ended before earlier ones
        self._next = 1  # -k: the input position printed next

    # -- a run on input: output as GNU parallel prints it ---------------------
    def job_output(self, position: int, tag: Callable[[], str], out: "Tail", err: "Tail",
                   final: bool) -> None:
        """Print what a job wrote since the last call, as the style says: at
        its end only for "group" (and always with -k), else as it comes."""
        mode = self.style.mode
        if self.quiet or (not final and (mode == "group" or self.style.keep_order)):
            return
        if mode == "ungroup" and not self.style.tagged:
            parts = [(self.out, out.chunk()), (self.err, err.chunk())]
            if final:
                out.close()
                err.close()
        else:
            prefix = (tag() + "\t").encode("utf-8", "surrogateescape") if self.style.tagged else b""
            parts = [(self.out, _tagged(out.whole_lines(final), prefix)),
                     (self.err, _tagged(err.whole_lines(final), prefix))]
        if not self.style.keep_order:
            self._write_bytes(parts)
            return
        self._held.setdefault(position, []).extend(parts)
        if position < self._next:  # run again after its turn: printed at once
            self._write_bytes(self._held.pop(position))
        while self._next in self._held:
            self._write_bytes(self._held.pop(self._next))
            self._next += 1

    def flush_held(self) -> None:
        """-k at the end of a run: what waits for a job that never ended, in order."""
        for position in sorted(self._held):
            self._write_bytes(self._held.pop(position))

    def _write_bytes(self, parts: List[tuple]) -> None:
        for stream, data in parts:
            if data:
                stream.flush()
                buffer = getattr(stream, "buffer", None)
                if buffer is not None:
                    buffer.write(data)
                    buffer.flush()
                else:  # a stream of text only (tests): the bytes as text
                    stream.write(data.decode("utf-8", "surrogateescape"))
                    stream.flush()

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


def _tagged(data: bytes, prefix: bytes) -> bytes:
    if not prefix or not data:
        return data
    lines = data.split(b"\n")
    last = lines.pop()  # after the final newline: b"" when the output ends with one
    return b"".join(prefix + line + b"\n" for line in lines) + (prefix + last if last else b"")


def brief(text: str) -> str:
    """A command in a message: one line, at most 80 characters."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


def clock(seconds: float) -> str:
    """M:SS, or H:MM:SS from an hour on."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
