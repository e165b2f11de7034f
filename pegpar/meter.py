"""`--bar`, `--eta` and `--progress` of a run on input, drawn on stderr as
GNU parallel draws them (its `progress`, `compute_eta` and `bar`), from
pegpar's counts: jobs started, running and completed per host.

With `--bar` or `--eta`, GNU parallel reads all its input before the first
job (it needs the total); a run with them does the same (sources.InputQueue
`whole`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, TextIO, Tuple

REVERSE, RESET, ERASE_LINE = "\033[7m", "\033[0m", "\033[K"
REDRAW_EVERY = 0.2  # seconds between two draws while nothing ends
NEEDS_TOTAL = ("bar", "eta")  # kinds that need all the input read first


def time_units(seconds: float) -> str:
    """GNU parallel's seconds_to_time_units: 75 -> `1m15s`."""
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m{s:02d}s"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def perl_number(x: float) -> str:
    """A number as perl prints it (15 significant digits, no trailing zeros)."""
    return f"{x:.15g}"


def bar(width: int, total: int, completed: int, eta: float, arg: str, done: bool, elapsed: float) -> str:
    """One frame of `--bar`: zenity's line, the percentage, then the bar:
    `PCT% DONE:LEFT=ETA ARG` with the completed part in reverse video."""
    pct = min(completed / total, 100) if completed and total else 0
    if done:
        eta = elapsed
    text = f"{int(pct * 100)}% {completed}:{total - completed}={time_units(eta)} {arg}"
    s = (text + " " * width)[:width].ljust(width)
    cut = int(width * pct)
    s = s[:cut] + RESET + s[cut:]
    shown_eta = perl_number(eta) if done else str(int(eta))
    zenity = f"#   {shown_eta} sec {arg}"[:width].ljust(width)
    return "\r" + zenity + "\r" + perl_number(pct * 100) + "\r" + REVERSE + s + RESET


@dataclass
class Worker:
    """A host as `--eta`/`--progress` lists it."""

    name: str  # `local` for this machine
    cpus: str  # `-` where pegpar does not know it
    slots: int
    running: int = 0
    completed: int = 0


# GNU parallel's status formats, widest first: the first that fits the
# terminal is used (fields: sshlogin or number, running, completed, %, seconds)
_FORMATS: List[Tuple[str, str]] = [
    ("Computer:jobs running/jobs completed/%of started jobs/Average seconds to complete", "name rcpt"),
    ("Computer:jobs running/jobs completed/%of started jobs", "no rcpt"),
    ("Computer:jobs running/jobs completed/%of started jobs", "name rcp"),
    ("Computer:jobs running/jobs completed/%of started jobs", "no rcp"),
    ("Computer:jobs running/jobs completed", "name rc"),
    ("Computer:jobs running/jobs completed", "no rc"),
    ("Computer:jobs completed", "name c"),
    ("Computer:jobs completed", "no c"),
]


def _worker_field(w: Worker, no: int, fields: str, started: int, elapsed: float) -> str:
    who, what = fields.split()
    text = (w.name if who == "name" else str(no)) + ":"
    pct = int((w.running + w.completed) * 100 / started) if started else 0
    avg = elapsed / w.completed if w.completed else 0.0
    parts = {"r": str(w.running), "c": str(w.completed), "p": f"{pct}%", "t": f"{avg:.1f}s"}
    text += "/".join(parts[f] for f in what)
    return text + (" " if what == "rcpt" else "")


def status(workers: List[Worker], started: int, elapsed: float, eta: str, width: int) -> Tuple[str, str]:
    """(header, status line) of `--eta`/`--progress`: the widest format that fits."""
    header, line = _FORMATS[0][0], ""
    for header, fields in _FORMATS:
        line = eta + " ".join(_worker_field(w, i, fields, started, elapsed) for i, w in enumerate(workers, 1))
        if len(line) <= width:
            break
    return header, line + ERASE_LINE


def worker_list(workers: List[Worker]) -> str:
    return "".join(f"{i}:{w.name} / {w.cpus} / {w.slots}\n" for i, w in enumerate(workers, 1))


@dataclass
class Eta:
    """GNU parallel's compute_eta: the average time per job since the first
    completed, smoothed towards the plain average as the run goes on, and not
    moved up by less than 10%."""

    first_completed: float = 0.0
    smoothed: float = 0.0
    last: int = 0

    def compute(self, total: int, completed: int, now: float) -> Tuple[float, float, int]:
        """(fraction complete, average seconds per job, eta in seconds)."""
        if not completed:
            return 0.0, 0.0, 0
        pct = min(completed / total, 100) if total else 1.0
        self.first_completed = self.first_completed or now
        avg = (now - self.first_completed) / completed
        self.smoothed = self.smoothed or avg
        self.smoothed = (1 - pct) * self.smoothed + pct * avg
        eta = int((total - completed) * self.smoothed)
        if eta * 0.90 < self.last < eta:
            eta = self.last
        else:
            self.last = eta
        return pct, avg, eta


def terminal_columns() -> int:
    """As GNU parallel finds it: the terminal's (COLUMNS where set, as tput
    takes it), and 80 without a terminal."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return 80
    try:
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        return os.get_terminal_size(fd).columns or 80
    except OSError:
        return 80
    finally:
        os.close(fd)


@dataclass
class Meter:
    """What a run on input draws on stderr for `kind` (bar, eta or progress)."""

    kind: str
    out: TextIO
    started_at: float = field(default_factory=time.time)
    workers: Dict[str, Worker] = field(default_factory=dict)
    started: int = 0
    newest_arg: str = ""
    eta: Eta = field(default_factory=Eta)
    total: int = 0
    _last_draw: float = 0.0
    _changed: bool = True
    _width: int = 0

    @property
    def needs_total(self) -> bool:
        return self.kind in NEEDS_TOTAL

    def begin(self, hosts: List[Tuple[str, bool, int]], total: int) -> None:
        """`hosts`: (host, is this machine, sub-nodes) each. Draws the
        header of `--eta`/`--progress`."""
        self.total = total
        self._width = terminal_columns()
        for host, local, slots in sorted(hosts, key=lambda h: ":" if h[1] else h[0]):
            name = "local" if local else host
            self.workers[host] = Worker(name, str(os.cpu_count() or "-") if local else "-", slots)
        if self.kind != "bar":
            header, _ = status(list(self.workers.values()), 0, 0.0, self._eta_text(time.time()), self._width)
            self._write("\nComputers / CPU threads / Max jobs to run\n" + worker_list(list(self.workers.values()))
                        + "\n" + header + "\n")

    def job_started(self, host: str, args: Tuple[str, ...]) -> None:
        self.started += 1
        self.newest_arg = " ".join(args)
        w = self.workers.get(host)
        if w is not None:
            w.running += 1
        self._changed = True

    def job_ended(self, host: str) -> None:
        w = self.workers.get(host)
        if w is not None:
            w.running = max(0, w.running - 1)
            w.completed += 1
        self._changed = True

    def draw(self, now: Optional[float] = None, final: bool = False) -> None:
        now = time.time() if now is None else now
        if not final and (not self._changed or now - self._last_draw < REDRAW_EVERY) \
                and now - self._last_draw < 1.0:
            return
        self._last_draw, self._changed = now, False
        text = self.frame(now, final)
        self._write(text + ("\n" if final else ""))

    @property
    def completed(self) -> int:
        return sum(w.completed for w in self.workers.values())

    def frame(self, now: float, final: bool = False) -> str:
        completed = self.completed
        total = max(self.total, completed)
        if self.kind == "bar":
            _, _, eta = self.eta.compute(total, completed, now)
            return "\r" + bar(self._width, total, completed, eta, self.newest_arg, final, now - self.started_at)
        _, line = status(list(self.workers.values()), self.started, now - self.started_at,
                         self._eta_text(now), self._width)
        return "\r" + line

    def _eta_text(self, now: float) -> str:
        if self.kind != "eta":
            return ""
        completed = self.completed
        total = max(self.total, completed)
        _, avg, eta = self.eta.compute(total, completed, now)
        return f"ETA: {eta}s Left: {total - completed} AVG: {avg:.2f}s  "

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass
