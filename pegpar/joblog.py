"""GNU parallel's joblog: parse records, follow a growing file, append records.

The format is parallel's own (tab-separated, header `Seq Host Starttime
JobRuntime Send Receive Exitval Signal Command`), so the file pegpar writes can
be read by anything that reads parallel's joblogs, `--resume` included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import IO, List, Optional

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


@dataclass(frozen=True)
class Record:
    seq: int
    host: str
    start: float
    runtime: float
    send: int
    receive: int
    exitval: int
    signal: int
    command: str

    @property
    def ok(self) -> bool:
        return self.exitval == 0 and self.signal == 0

    def line(self) -> str:
        command = self.command.replace("\n", " ").replace("\t", " ")
        host = self.host.replace("\t", " ")
        return (f"{self.seq}\t{host}\t{self.start:.3f}\t{self.runtime:10.3f}\t{self.send}\t"
                f"{self.receive}\t{self.exitval}\t{self.signal}\t{command}\n")


def parse_line(line: str) -> Optional[Record]:
    """One joblog line -> Record; None for the header or a malformed line."""
    parts = line.rstrip("\n").split("\t", 8)
    if len(parts) < 9 or parts[0] == "Seq":
        return None
    try:
        return Record(int(parts[0]), parts[1], float(parts[2]), float(parts[3]), int(parts[4]),
                      int(parts[5]), int(parts[6]), int(parts[7]), parts[8])
    except ValueError:
        return None


def read(path: str) -> List[Record]:
    """Every record of a joblog file (missing file: none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [r for r in map(parse_line, f) if r is not None]
    except FileNotFoundError:
        return []


def last_seq(path: str) -> int:
    """The highest Seq in a joblog, reading only its tail (0 when empty or missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return 0
    seqs = [r.seq for r in map(parse_line, tail[1:] if size > 65536 else tail) if r is not None]
    return max(seqs, default=0)


class Follower:
    """Reads the complete lines a file (a joblog) gains since the last call."""

    def __init__(self, path: str):
        self.path = path
        self._file: Optional[IO[bytes]] = None  # kept open once it exists: one read a call
        self._partial = b""

    def new_lines(self) -> List[str]:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._file.read()
        if not data:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [x.decode("utf-8", "replace") for x in lines]

    def new_records(self) -> List[Record]:
        return [r for r in map(parse_line, self.new_lines()) if r is not None]

    def modified(self) -> Optional[float]:
        """When the file was last written to (None before it exists): no
        earlier than any line read so far."""
        return os.fstat(self._file.fileno()).st_mtime if self._file is not None else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def append(path: str, records: List[Record]) -> None:
    """Append records, writing the header first into a new file; one write, flushed."""
    if not records:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        text = "".join(r.line() for r in records)
        if os.fstat(fd).st_size == 0:
            text = HEADER + text
        os.write(fd, text.encode("utf-8", "surrogateescape"))  # bytes of a non-UTF-8 input line as they came
    finally:
        os.close(fd)


def relabel(record: Record, seq: int, host: str, command: str) -> Record:
    """A wave's record as it goes into the main joblog: pegpar's seq, the
    sub-node's name, and the command as the user's template rendered it."""
    return replace(record, seq=seq, host=host, command=command)
