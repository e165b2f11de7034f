"""The state directory (`.pegpar/` next to the queue file): who runs this queue,
its live status, the journal of dispatched jobs, and control requests.

The controller writes here; `pegpar status`, `log`, `retry`, `stop` and `kill`
read it, so every file is replaced whole (write a temporary file, rename it
over) or appended in whole lines: a reader never sees half a write.
Directory 0700, files 0600: commands and their output may hold secrets.

Layout:
    controller.lock   OS lock held by the live controller (dies with it)
    controller.json   who holds it: pid, start time, mode, files
    status.json       the live snapshot, rewritten about once a second
    journal           JSON lines: run, dispatch, done (reset at each start,
                      compacted as it grows: see compact)
    control/          one JSON file per pending request (kill a job)
"""

from __future__ import annotations

import bisect
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple, Union

import filelock

from pegpar.errors import UserError

CLAIM_WAIT = 0.5  # seconds: a reader probing the lock holds it for a moment only
COMPACT_AT = 4 << 20  # bytes: the journal is compacted once past this and twice its last compacted size


class StateDir:
    def __init__(self, path: str):
        # Nothing is created here: readers (`pegpar status`) must not litter a
        # directory where pegpar never ran.
        self.path = path
        self._lock: Optional[filelock.FileLock] = None
        self._counter = 0
        self._compact_at = COMPACT_AT

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _ensure(self, sub: str = "") -> str:
        folder = os.path.join(self.path, sub) if sub else self.path
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return folder

    # -- the controller's claim ----------------------------------------------
    def claim(self, info: Dict[str, Any]) -> None:
        """Become THE controller of this queue for the life of this process:
        an OS lock (filelock on `controller.lock`, held until release() or
        process death, so a kill -9 leaves nothing stale) plus `controller.json`
        = info (pid, started, mode, hosts_file, queue_file, ...). If another live
        controller holds it: UserError naming it (pid, since when)."""
        self._ensure()
        lock = filelock.FileLock(self._file("controller.lock"), mode=0o600)
        try:
            lock.acquire(timeout=CLAIM_WAIT)
        except filelock.Timeout:
            raise _busy(info, _read_json(self._file("controller.json"))) from None
        except OSError as err:
            raise UserError(f"cannot lock the state directory: {err.strerror}",
                            where=self._file("controller.lock")) from None
        self._lock = lock
        info = dict(info)
        info.setdefault("pid", os.getpid())
        info.setdefault("hostname", socket.gethostname())
        _write_atomic(self._file("controller.json"), dumps(info))
        # Requests left for an earlier controller (one that died before taking
        # them) must not kill whatever this one starts on that sub-node.
        for name in _listdir(self._file("control")):
            _unlink(os.path.join(self._file("control"), name))

    def release(self) -> None:
        if self._lock is None:
            return
        _unlink(self._file("controller.json"))
        self._lock.release()
        self._lock = None

    def controller(self) -> Optional[Dict[str, Any]]:
        """controller.json of the LIVE controller, or None (none, or stale)."""
        info = _read_json(self._file("controller.json"))
        if not isinstance(info, dict):
            return None
        if self._lock is not None:
            return info
        probe = filelock.FileLock(self._file("controller.lock"), mode=0o600)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            pass  # held: someone is alive; check it is the one named in the file
        except OSError:
            pass  # cannot even open the lock (another user's dir): judge by the pid
        else:
            probe.release()
            return None  # its holder died (kill -9, crash): controller.json is stale
        if info.get("hostname", socket.gethostname()) != socket.gethostname():
            return info  # a controller on another machine sharing this directory
        return info if _pid_alive(info.get("pid")) else None

    # -- the status snapshot ---------------------------------------------------
    def write_status(self, snapshot: Union[Dict[str, Any], str]) -> None:
        """Atomically replace `status.json` with a snapshot or its JSON text
        (the controller calls this about once a second)."""
        self._ensure()
        # No fsync: the snapshot is rewritten every second and worthless after
        # a crash (readers check the controller is alive), while an fsync each
        # second on a busy or network disk would stall the controller's loop.
        _write_atomic(self._file("status.json"), snapshot if isinstance(snapshot, str) else dumps(snapshot),
                      durable=False)

    def read_status(self) -> Optional[Dict[str, Any]]:
        data = _read_json(self._file("status.json"))
        return data if isinstance(data, dict) else None

    # -- the journal -----------------------------------------------------------
    def journal_append(self, records: List[Dict[str, Any]], sync: bool = True) -> None:
        """Append JSON lines to `journal` and fsync unless `sync` is False
        (crash recovery reads it). A journal grown past its bound is compacted."""
        if not records:
            return
        self._ensure()
        text = "".join(dumps(r) + "\n" for r in records).encode("utf-8")
        fd = os.open(self._file("journal"), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-append leaves a torn line; starting on a fresh line
            # keeps that one line the only loss.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                text = b"\n" + text
            _write_all(fd, text)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if size + len(text) > self._compact_at:
            # a long run (--daemon) would otherwise grow it by two lines a job
            try:
                self.journal_reset(compact(self.journal()))
            except OSError:
                pass  # a full disk, say: the journal stays whole, and the append above stands
            self._compact_at = max(COMPACT_AT, 2 * os.stat(self._file("journal")).st_size)

    def journal(self) -> List[Dict[str, Any]]:
        """Every journal record, in order (a torn last line is skipped)."""
        try:
            with open(self._file("journal"), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def journal_reset(self, records: List[Dict[str, Any]]) -> None:
        """Atomically replace the journal with `records` (at start, and compaction)."""
        self._ensure()
        _write_atomic(self._file("journal"), "".join(dumps(r) + "\n" for r in records))

    def joblog_path(self) -> str:
        """The main joblog of this queue's runs: the one the latest status
        snapshot names (a run given --joblog), else `joblog` here."""
        status = self.read_status() or {}
        path = status.get("joblog")
        return path if isinstance(path, str) and path else self._file("joblog")

    def last_run(self) -> Optional["Run"]:
        """The journal's view of the most recent controller run (None: no run recorded)."""
        return last_run(self.journal())

    # -- control requests -------------------------------------------------------
    def request(self, request: Dict[str, Any]) -> None:
        """Leave a control request for the running controller (e.g.
        {"kill": {"seq": 12}} or {"kill": {"node": "node-1 (gpu=0)"}}) as a new
        file under `control/`; the controller picks it up within a second."""
        folder = self._ensure("control")
        self._counter += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter}.json"
        _write_atomic(os.path.join(folder, name), dumps(request))

    def take_requests(self) -> List[Dict[str, Any]]:
        """Read and delete pending control requests (cheap when there are none)."""
        folder = self._file("control")
        requests = []
        for name in sorted(_listdir(folder)):
            path = os.path.join(folder, name)
            data = _read_json(path)
            _unlink(path)
            if isinstance(data, dict):
                requests.append(data)
        return requests


@dataclass(frozen=True)
class Run:
    """One controller run as its journal records tell it."""

    info: Dict[str, Any]  # the "run" event
    dispatched: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # seq -> dispatch, in order
    done: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # seq -> done
    ran: Tuple[Tuple[int, int], ...] = ()  # sorted disjoint [first, last] seqs of compacted successes
    again: FrozenSet[int] = frozenset()  # failed jobs pegpar ran again (--retries, a host gone down)

    @property
    def id(self) -> Any:
        return self.info.get("run")

    def __contains__(self, seq: object) -> bool:
        """Whether the job `seq` was dispatched in this run (compacted or not)."""
        if seq in self.dispatched:
            return True
        at = bisect.bisect_right(self.ran, (seq, float("inf"))) - 1 if isinstance(seq, int) else -1
        return at >= 0 and self.ran[at][0] <= seq <= self.ran[at][1]

    def unfinished(self) -> List[Dict[str, Any]]:
        """Dispatches without a done record: running, or lost with their controller."""
        return [d for seq, d in self.dispatched.items() if seq not in self.done]


def state_dir_for(queue_file: str) -> str:
    """The state directory sits next to the queue file: `.pegpar/` for
    `queue.yaml`, `.pegpar-NAME/` for a queue file of another NAME (two queues
    in one directory keep apart runs, status, logs and retries)."""
    folder, name = os.path.split(os.path.realpath(queue_file))  # a link shares its target's
    return os.path.join(folder, ".pegpar" if name == "queue.yaml" else f".pegpar-{name}")


def last_run(records: List[Dict[str, Any]]) -> Optional[Run]:
    """The last "run" event and the dispatch/done records that belong to it."""
    starts = [i for i, r in enumerate(records) if r.get("event") == "run"]
    if not starts:
        return None
    info = records[starts[-1]]
    dispatched: Dict[int, Dict[str, Any]] = {}
    done: Dict[int, Dict[str, Any]] = {}
    ran: List[Tuple[int, int]] = []
    again: Set[int] = set()
    for r in records[starts[-1] + 1:]:
        seq = r.get("seq")
        if r.get("run") != info.get("run"):
            continue
        if r.get("event") == "ran" and isinstance(r.get("seqs"), list):
            ran += [(int(a), int(b)) for a, b in r["seqs"]]
        if not isinstance(seq, int):
            continue
        if r.get("event") == "dispatch":
            dispatched[seq] = r
        elif r.get("event") == "done":
            done[seq] = r
        elif r.get("event") == "again":
            again.add(seq)
        elif r.get("event") == "untaken":  # the pop was abandoned: the job stayed queued
            dispatched.pop(seq, None)
    return Run(info, dispatched, done, tuple(sorted(ran)), frozenset(again))


def compact(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The journal without what no reader needs: the last run's jobs that
    succeeded lose their dispatch and done records to one "ran" record of seq
    ranges (`seq in run` still holds for them). Kept whole: jobs running or
    failed (recovery, `pegpar retry`), the "again" marks of failed jobs pegpar
    ran again, and the "left"/"left-killed" marks of jobs whose first copy may
    still run on a host that was down; the highest seq given out stays in the
    "seqs" record."""
    run = last_run(records)
    if run is None:
        return records
    gone = {seq for seq in run.dispatched if seq in run.done and _succeeded(run.done[seq])}
    # jobs of an abandoned pop stayed queued: no reader needs them
    untaken = {r.get("seq") for r in records if r.get("event") == "untaken"}
    ran = _merged(list(run.ran) + [(seq, seq) for seq in gone])
    kept = [r for r in records[records.index(run.info) + 1:]
            if r.get("run") == run.id and r.get("event") in ("dispatch", "done", "again", "left", "left-killed")
            and r.get("seq") not in gone | untaken]
    return ([{"event": "seqs", "seq": highest_seq(records)}, run.info]
            + ([{"event": "ran", "run": run.id, "seqs": [list(r) for r in ran]}] if ran else []) + kept)


def highest_seq(records: List[Dict[str, Any]]) -> int:
    """The highest job seq the journal names (0 when none): seqs given out stay used."""
    return max((r["seq"] for r in records if isinstance(r.get("seq"), int)), default=0)


def _succeeded(done: Dict[str, Any]) -> bool:
    return done.get("exitval") == 0 and done.get("signal") == 0


def entry_key(canonical: Any) -> str:
    """A dispatch record's entry (its "canonical"), comparable across jobs."""
    return json.dumps(canonical, sort_keys=True)


def _merged(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Inclusive seq ranges, sorted, touching ones joined."""
    out: List[Tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def _busy(info: Dict[str, Any], holder: Any) -> UserError:
    queue = info.get("queue_file")
    if isinstance(holder, dict) and holder.get("pid"):
        since = holder.get("started")
        when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" \
            if isinstance(since, (int, float)) else ""
        where = f" on {holder['hostname']}" if holder.get("hostname", socket.gethostname()) \
            != socket.gethostname() else ""
        what = f"another pegpar is running on this queue (pid {holder['pid']}{where}{when})"
    else:
        what = "another pegpar is starting on this queue"
    return UserError(what, where=queue, hint="`pegpar status` shows it; `pegpar stop` ends it")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def dumps(obj: Any) -> str:
    """JSON on one line, as the state directory's files hold it."""
    return json.dumps(obj, separators=(",", ":"))


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_atomic(path: str, text: str, durable: bool = True) -> None:
    """Replace `path` whole: readers see the old content or the new, never a mix."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            _write_all(fd, text.encode("utf-8"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _listdir(folder: str) -> List[str]:
    """Entries that are not temporary files (those start with a dot)."""
    try:
        return [n for n in os.listdir(folder) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
