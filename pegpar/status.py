"""`pegpar status`: what a queue's controller is doing, or what its last run did.

While a controller runs, its status snapshot (rewritten every second) says
which sub-node runs what; after it has ended, the joblog and the journal say
how the last run went. Either way queue.yaml says how much is left.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, TextIO, Tuple

from pegpar import joblog
from pegpar.errors import UserError
from pegpar.logview import columns, duration, local_time, one_line
from pegpar.state import StateDir, state_dir_for

STALE_AFTER = 5.0  # seconds without a new snapshot before saying so
MODES = {"q": "queue mode", "b": "broadcast mode"}


def queued(queue_file: str) -> Tuple[Optional[int], Optional[str]]:
    """(jobs left in the queue file, None) or (None, why it cannot be read).
    A missing file holds no jobs."""
    from pegpar import expand, spec

    if not os.path.exists(queue_file):
        return 0, None
    try:
        return sum(expand.count(e.dims) for e in spec.load_queue(queue_file)), None
    except UserError as err:
        return None, str(err)


def consumed(queue_file: str) -> int:
    """Entries in consumed.yaml, counted by their `- ` lines: pegpar writes one
    job per entry there, and a line scan stays cheap however long it grows."""
    from pegpar.queue import CONSUMED_FILE

    path = os.path.join(os.path.dirname(os.path.abspath(queue_file)), CONSUMED_FILE)
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(b"- ") or line.rstrip(b"\r\n") == b"-")
    except FileNotFoundError:
        return 0


def snapshot(queue_file: str, now: Optional[float] = None) -> Dict[str, Any]:
    """Everything `pegpar status` shows, as the JSON of `--json`."""

    now = time.time() if now is None else now
    state = StateDir(state_dir_for(queue_file))
    ctl = state.controller()
    count, queue_error = queued(queue_file)
    data: Dict[str, Any] = {"queue_file": queue_file, "controller": ctl, "nodes": [],
                            "queued": count, "queue_error": queue_error, "running": 0, "done": 0,
                            "failed": 0, "elapsed": None, "jobs_running": [], "last_run": None}
    if ctl is not None:
        _live(data, state, ctl, now)
    else:
        _ended(data, state, queue_file)
    return data


def _live(data: Dict[str, Any], state: StateDir, ctl: Dict[str, Any], now: float) -> None:
    snap = state.read_status() or {}
    if snap.get("pid") != ctl.get("pid"):
        snap = {}  # the snapshot of an earlier run: this one has not written its first yet
    data["nodes"] = snap.get("nodes", [])
    for key in ("running", "done", "failed"):
        data[key] = snap.get(key, 0)
    if isinstance(snap.get("queued"), int):  # jobs from stdin: the controller knows how many
        data["queued"], data["queue_error"] = snap["queued"], None
    if isinstance(snap.get("queue_error"), str) and not data["queue_error"]:
        # the file parses, but its head cannot run (e.g. an unknown variable): the controller says so
        data["queue_error"] = snap["queue_error"]
    started = ctl.get("started") or snap.get("started")
    data["elapsed"] = now - started if isinstance(started, (int, float)) else None
    data["stopping"] = bool(snap.get("stopping"))
    data["updated"] = snap.get("updated")
    data["jobs_running"] = [{"seq": job.get("seq"), "node": n.get("name"), "command": job.get("command"),
                             "since": job.get("since"), "slots": job.get("slots", [0])}
                            for n in data["nodes"] for job in _jobs(n)]


def _jobs(node: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The jobs a sub-node runs, as the snapshot has them (an older one: `job` alone)."""
    jobs = node.get("jobs")
    if isinstance(jobs, list):
        return [j for j in jobs if isinstance(j, dict)]
    return [node["job"]] if isinstance(node.get("job"), dict) else []


def _ended(data: Dict[str, Any], state: StateDir, queue_file: str) -> None:
    records = joblog.read(state.joblog_path())
    run = state.last_run()
    if run is not None:
        records = [r for r in records if r.seq in run]
        recorded = {r.seq for r in records}
        data["last_run"] = run.info
        data["interrupted"] = sum(1 for seq in run.dispatched if seq not in recorded)
        started = run.info.get("started")
        if isinstance(started, (int, float)) and records:
            data["elapsed"] = max(r.start + r.runtime for r in records) - started
    again = run.again if run is not None else frozenset()
    data["done"] = sum(1 for r in records if r.ok)
    # as the run's summary counts them: a job run again later (--retries, a
    # host that went down) counts by its last attempt
    data["failed"] = sum(1 for r in records if not r.ok and r.seq not in again)
    data["ran_again"] = sum(1 for r in records if not r.ok and r.seq in again)
    data["consumed"] = consumed(queue_file)


def render(data: Dict[str, Any], now: Optional[float] = None, width: int = 100) -> str:
    """One frame of `pegpar status` as text (`width`: the terminal's)."""
    now = time.time() if now is None else now
    ctl = data["controller"]
    lines: List[str] = []
    queued_text = "?" if data["queued"] is None else str(data["queued"])
    if ctl is not None:
        mode = MODES.get(ctl.get("mode"), "")
        since = f", since {local_time(ctl['started'])}" if isinstance(ctl.get("started"), (int, float)) else ""
        elapsed = f", {duration(data['elapsed'])}" if data["elapsed"] is not None else ""
        doing = "stopping: no new jobs" if data.get("stopping") else "running"
        lines.append(f"{data['queue_file']}: pegpar {doing} (pid {ctl.get('pid')}, {mode}{since}{elapsed})")
        lines.append(f"  queued {queued_text}   running {data['running']}   done {data['done']}   "
                     f"failed {data['failed']}")
    else:
        run = data["last_run"]
        if run is None:
            lines.append(f"{data['queue_file']}: no pegpar running")
        else:
            mode = MODES.get(run.get("mode"), "")
            when = local_time(run["started"]) if isinstance(run.get("started"), (int, float)) else "?"
            lasted = f", lasted {duration(data['elapsed'])}" if data["elapsed"] is not None else ""
            lines.append(f"{data['queue_file']}: no pegpar running; last run started {when} "
                         f"(pid {run.get('pid')}, {mode}{lasted})")
        again = f" ({data['ran_again']} failed attempt(s) ran again)" if data.get("ran_again") else ""
        lines.append(f"  queued {queued_text}   done {data['done']}   failed {data['failed']}{again}   "
                     f"consumed {data.get('consumed', 0)}")
        if data.get("interrupted"):
            lines.append(f"  {data['interrupted']} job(s) of the last run have no result: its "
                         "controller stopped while they ran (the next run reports them)")
    if data["queue_error"]:
        lines.append(f"  the queue has an error: {data['queue_error']}")
    updated = data.get("updated")
    if ctl is not None and isinstance(updated, (int, float)) and now - updated > STALE_AFTER:
        lines.append(f"  (the controller last reported {duration(now - updated)} ago: it may be stuck)")
    text = "\n".join(lines) + "\n"
    if data["nodes"]:
        text += "\n" + _nodes_table(data["nodes"], now, width)
    return text


def _nodes_table(nodes: List[Dict[str, Any]], now: float, width: int) -> str:
    """A row per sub-node and job; with job slots, which slots each job holds
    and which are free, in a SLOTS column."""
    with_slots = any(isinstance(n.get("slots"), int) and n["slots"] > 1 for n in nodes)
    rows = [("SUB-NODE", "STATE") + (("SLOTS",) if with_slots else ()) + ("JOB",)]
    for n in nodes:
        name, state = str(n.get("name", "")), str(n.get("state", ""))
        lines = []
        for job in _jobs(n):
            since = job.get("since")
            took = f" for {duration(now - since)}" if isinstance(since, (int, float)) else ""
            lines.append((_indices(job.get("slots", [])), f"#{job.get('seq')}{took}: {job.get('command', '')}"))
        free = n.get("free")
        if with_slots and isinstance(free, list) and free:
            lines.append((_indices(free), "free"))
        if n.get("held"):
            lines.append(("", f"takes no new job: {n['held']}"))
        for slots, what in lines or [("", "")]:
            rows.append((name, state) + ((slots,) if with_slots else ()) + (what,))
            name = state = ""
    fixed = sum(max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]) - 1))
    room = max(20, width - fixed)
    return columns([r[:-1] + (one_line(r[-1], room),) for r in rows])


def _indices(slots: List[Any]) -> str:
    """Slot indices, runs shortened: 0-3,6."""
    out: List[str] = []
    for i in sorted(s for s in slots if isinstance(s, int)):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = out[-1].split("-")[0] + f"-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def status(queue_file: str, as_json: bool, watch: bool) -> Optional[str]:
    """`pegpar status`: the text to print, or None after --watch (which prints
    itself until Ctrl-C)."""
    if watch:
        try:
            watch_frames(queue_file, as_json)
        except KeyboardInterrupt:
            pass
        return None
    return frame(queue_file, as_json)


def frame(queue_file: str, as_json: bool, width: Optional[int] = None) -> str:
    data = snapshot(queue_file)
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    return render(data, width=width or shutil.get_terminal_size((100, 24)).columns)


def watch_frames(queue_file: str, as_json: bool, out: TextIO = sys.stdout, interval: float = 1.0,
                 frames: Optional[int] = None) -> None:
    """Redraw in place every `interval` seconds (`frames`: how many, None: until
    interrupted). With JSON, one compact object per line instead."""
    shown = 0
    while frames is None or shown < frames:
        if shown:
            time.sleep(interval)
        if as_json:
            out.write(json.dumps(snapshot(queue_file)) + "\n")
        elif out.isatty():
            text = frame(queue_file, False)
            # Home, each line cleared to its end, the rest of the screen cleared:
            # no flicker from clearing the whole screen first.
            out.write("\033[H" + text.replace("\n", "\033[K\n") + "\033[J")
        else:  # a pipe or a file: plain frames, one after another
            out.write(frame(queue_file, False) + "\n")
        out.flush()
        shown += 1

