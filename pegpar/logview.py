"""`pegpar log` and `pegpar logs`: what ran, where, for how long, how it ended.

`pegpar log` reads a GNU parallel joblog (pegpar's own, `.pegpar/joblog`, or
any other one written by plain GNU parallel) and shows it as a table, JSON or
TSV, with filters and a per-sub-node summary. While a controller runs, its
journal adds the jobs that have started but not yet ended. `pegpar logs SEQ`
prints one job's kept output from `.pegpar/logs`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Container, Dict, List, Optional, Sequence, Tuple

from pegpar import joblog
from pegpar.errors import UserError
from pegpar.state import StateDir, last_run, state_dir_for


@dataclass(frozen=True)
class Row:
    """One job: a joblog record, or a job still running (exitval None)."""

    seq: int
    node: str
    start: float
    runtime: float
    exitval: Optional[int]
    signal: Optional[int]
    command: str

    @property
    def state(self) -> str:
        if self.exitval is None:
            return "running"
        return "ok" if self.exitval == 0 and self.signal == 0 else "failed"


@dataclass(frozen=True)
class NodeSummary:
    node: str
    jobs: int
    failed: int
    busy: float  # seconds spent running jobs
    utilisation: float  # slot-seconds used / (wall span of the rows summarised x slots) (0..1)
    slots: int = 1  # the sub-node's slots (for "(all)": every sub-node's)
    slot_hours: float = 0.0  # sum over its jobs of runtime x the slots each held, in hours


# -- formatting shared by the status view ---------------------------------------
def duration(seconds: float) -> str:
    """A short human duration: 4.2s, 3m05s, 2h03m, 1d02h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def local_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def one_line(text: str, width: Optional[int] = None) -> str:
    """A command on one line (newlines shown as \\n), cut to `width` with `...`."""
    text = text.replace("\n", "\\n").replace("\t", " ")
    if width is not None and len(text) > width:
        return text[:max(0, width - 3)] + "..."
    return text


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned text; the last column is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() + "\n"
                   for r in rows)


# -- gathering -------------------------------------------------------------------
def rows_from_records(records: Sequence[joblog.Record]) -> List[Row]:
    return [Row(r.seq, r.host, r.start, r.runtime, r.exitval, r.signal, r.command) for r in records]


def running_rows(state: StateDir, recorded: Sequence[int], now: float) -> List[Row]:
    """Jobs the live controller dispatched that have no joblog record yet."""
    ctl = state.controller()
    run = state.last_run()
    if ctl is None or run is None:
        return []
    seen = set(recorded)
    return [Row(d["seq"], str(d.get("node", "")), float(d.get("start", now)),
                now - float(d.get("start", now)), None, None, str(d.get("command", "")))
            for d in run.unfinished() if d["seq"] not in seen]


def select(rows: Sequence[Row], *, failed: bool = False, running: bool = False,
           node: Optional[str] = None, seqs: Optional[Container[int]] = None,
           ran_again: Container[int] = ()) -> List[Row]:
    """Rows that pass the filters: --failed and --running together mean either.
    A failed attempt pegpar ran again (`ran_again`) is not a failed job: its
    last attempt decides."""
    states = ({"failed"} if failed else set()) | ({"running"} if running else set())
    return [r for r in rows if (not states or r.state in states)
            and not (r.state == "failed" and failed and r.seq in ran_again)
            and (node is None or r.node == node) and (seqs is None or r.seq in seqs)]


def summarize(rows: Sequence[Row], slots: Optional[Dict[int, Tuple[int, int]]] = None) -> List[NodeSummary]:
    """Per sub-node: jobs, failures, busy time, slot-hours, and utilisation of
    its slots over the wall span of these rows (first start to last end); then
    one line for all. `slots`: seq -> (slots the job held, its sub-node's
    slots), for jobs on sub-nodes of more than one slot (`read_slots`)."""
    if not rows:
        return []
    slots = slots or {}
    span = max(r.start + r.runtime for r in rows) - min(r.start for r in rows)
    by_node: Dict[str, List[Row]] = {}
    for r in rows:
        by_node.setdefault(r.node, []).append(r)
    node_slots = {name: max(slots.get(r.seq, (1, 1))[1] for r in group) for name, group in by_node.items()}

    def one(name: str, group: List[Row], total: int) -> NodeSummary:
        busy = sum(r.runtime for r in group)
        used = sum(r.runtime * slots.get(r.seq, (1, 1))[0] for r in group)
        return NodeSummary(name, len(group), sum(r.state == "failed" for r in group), busy,
                           used / (span * total) if span > 0 else 0.0, total, used / 3600)

    return [one(name, group, node_slots[name]) for name, group in by_node.items()] + \
        [one("(all)", list(rows), sum(node_slots.values()))]


SLOTS_FILE = "slots"  # in the state directory: one line per job run on a sub-node of several slots


def slots_line(seq: int, node: str, held: Sequence[int], node_slots: int) -> str:
    """The line `read_slots` reads back: seq, sub-node, slot indices held, the sub-node's slots."""
    return f"{seq}\t{node}\t{','.join(map(str, held))}\t{node_slots}\n"


def read_slots(state: StateDir) -> Dict[int, Tuple[int, int]]:
    """seq -> (slots the job held, its sub-node's slots), from SLOTS_FILE."""
    out: Dict[int, Tuple[int, int]] = {}
    try:
        with open(os.path.join(state.path, SLOTS_FILE), encoding="utf-8", errors="replace") as f:
            for line in f:
                seq, _, held, total = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
                if seq.isdigit() and total.isdigit():
                    out[int(seq)] = (len(held.split(",")), int(total))
    except FileNotFoundError:
        pass
    return out


# -- output ------------------------------------------------------------------------
def _exit_text(row: Row) -> str:
    if row.exitval is None:
        return "running"
    if row.signal:
        try:
            return signal.Signals(row.signal).name
        except ValueError:
            return f"signal {row.signal}"
    return str(row.exitval)


def table(rows: Sequence[Row]) -> str:
    cells = [("SEQ", "SUB-NODE", "START", "TIME", "EXIT", "COMMAND")]
    cells += [(str(r.seq), r.node, local_time(r.start), duration(r.runtime), _exit_text(r),
               one_line(r.command)) for r in rows]
    return columns(cells)


def summary_table(summary: Sequence[NodeSummary]) -> str:
    """With job slots (a sub-node of more than one), the slots and slot-hours too."""
    slotted = any(s.slots > 1 for s in summary[:-1])
    cells = [("SUB-NODE", "JOBS", "FAILED", "BUSY") + (("SLOTS", "SLOT-HOURS") if slotted else ())
             + ("UTILISATION",)]
    cells += [(s.node, str(s.jobs), str(s.failed), duration(s.busy))
              + ((str(s.slots), f"{s.slot_hours:.2f}") if slotted else ()) + (f"{s.utilisation:.0%}",)
              for s in summary]
    return columns(cells)


def _tsv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(x: object) -> str:
        return "" if x is None else one_line(str(x))

    return "".join("\t".join(map(cell, r)) + "\n" for r in [header, *rows])


def log(queue_file: str, joblog_path: Optional[str] = None, *, failed: bool = False,
        running: bool = False, node: Optional[str] = None, last: bool = False,
        summary: bool = False, as_json: bool = False, tsv: bool = False,
        now: Optional[float] = None) -> str:
    """The whole output of `pegpar log`.

    `joblog_path` None: the joblog of this queue's runs. `last`: only the jobs
    of the last run (by the journal). `summary`: per-sub-node totals instead of
    the jobs."""

    now = time.time() if now is None else now
    state = StateDir(state_dir_for(queue_file))
    own = state.joblog_path()
    path = joblog_path or own
    if joblog_path is not None and not os.path.isfile(joblog_path):
        raise UserError("no such joblog", where=joblog_path)
    rows = rows_from_records(joblog.read(path))
    ran_again: Container[int] = ()
    if _same_file(path, own):  # the journal speaks about this joblog only
        rows += running_rows(state, [r.seq for r in rows], now)
        run = state.last_run()
        ran_again = run.again if run is not None else ()
    seqs = None
    if last:
        run = state.last_run()
        if run is None:
            raise UserError("no run is recorded in this queue's journal", where=queue_file,
                            hint="leave out --last to see the whole joblog")
        seqs = run
    shown = select(rows, failed=failed, running=running, node=node, seqs=seqs, ran_again=ran_again)
    if summary:
        totals = summarize(shown, read_slots(state) if _same_file(path, own) else None)
        if as_json:
            return json.dumps([asdict(s) for s in totals], indent=2) + "\n"
        if tsv:
            return _tsv(["node", "jobs", "failed", "busy", "utilisation", "slots", "slot_hours"],
                        [(s.node, s.jobs, s.failed, f"{s.busy:.3f}", f"{s.utilisation:.4f}", s.slots,
                          f"{s.slot_hours:.4f}") for s in totals])
        return summary_table(totals) if totals else _nothing(rows, path)
    if as_json:
        return json.dumps([dict(asdict(r), state=r.state) for r in shown], indent=2) + "\n"
    if tsv:
        return _tsv(["seq", "node", "start", "runtime", "exitval", "signal", "state", "command"],
                    [(r.seq, r.node, f"{r.start:.3f}", f"{r.runtime:.3f}", r.exitval, r.signal,
                      r.state, r.command) for r in shown])
    return table(shown) if shown else _nothing(rows, path)


def _nothing(rows: Sequence[Row], path: str) -> str:
    if rows:
        return "no job matches\n"
    return f"no job has run yet (no records in {os.path.relpath(path)})\n"


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


# -- one job's output -----------------------------------------------------------------
def several_logs(queue_file: str, seqs: Sequence[int], failed: bool = False, which: str = "both") -> str:
    """`pegpar logs SEQ... [--failed]`: one job's output as it is; several
    jobs' (and --failed: every job of the last run whose last attempt failed),
    each under a header naming it, as `tail` does for several files."""
    state = StateDir(state_dir_for(queue_file))
    chosen = list(seqs)
    records = {r.seq: r for r in joblog.read(state.joblog_path())}
    if failed:
        run = state.last_run()
        if run is None:
            raise UserError("no run is recorded in this queue's journal", where=queue_file)
        chosen += [r.seq for r in select(rows_from_records(list(records.values())), failed=True, seqs=run,
                                         ran_again=run.again) if r.seq not in chosen]
        if not chosen:
            return "no job of the last run failed\n"
    if len(chosen) == 1 and not failed:
        return logs(queue_file, chosen[0], which)
    parts = []
    for seq in chosen:
        rec = records.get(seq)
        about = f" on {rec.host} (exit {rec.exitval}): {one_line(rec.command, 60)}" if rec else ""
        text = logs(queue_file, seq, which)
        parts.append(f"==> #{seq}{about} <==\n" + text + ("" if not text or text.endswith("\n") else "\n"))
    return "\n".join(parts)


def logs(queue_file: str, seq: int, which: str = "both") -> str:
    """The output of `pegpar logs SEQ`: the job's stdout, then its stderr
    (`which`: "out", "err" or "both"); partial while the job still runs."""

    state = StateDir(state_dir_for(queue_file))
    folder = os.path.join(state.path, "logs")
    stem = _log_stem(folder, seq)
    if stem is None:
        if _known(state, seq):
            raise UserError(f"no output was kept for job #{seq}", where=os.path.relpath(folder),
                            hint="it ran with --no-logs, or its files were removed")
        raise UserError(f"no job #{seq} has run on this queue", where=queue_file,
                        hint="`pegpar log` lists the jobs")
    parts = []
    for suffix, wanted in (("", which in ("out", "both")), (".err", which in ("err", "both"))):
        if wanted:
            text = _read_text(os.path.join(folder, stem + suffix))
            if parts and parts[-1] and not parts[-1].endswith("\n"):
                parts[-1] += "\n"
            parts.append(text)
    return "".join(parts)


def _log_stem(folder: str, seq: int) -> Optional[str]:
    """`SEQ.<sub-node>`, the name both output files start with (the sub-node's
    own name may end in `.err`, so the shortest name is the stem)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(f"{seq}.")]
    except FileNotFoundError:
        return None
    if not names:
        return None
    stem = min(names, key=len)
    if stem + ".err" not in names and stem.endswith((".err", ".seq")):
        stem = stem[:-4]  # the stdout file itself is missing
    return stem


def _known(state: StateDir, seq: int) -> bool:
    if any(r.seq == seq for r in joblog.read(state.joblog_path())):
        return True
    run = last_run(state.journal())
    return run is not None and seq in run


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
