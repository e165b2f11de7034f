"""`pegpar status` from hand-made state directories: a live controller (its
status snapshot), an ended run (joblog + journal), and a queue never run."""

from __future__ import annotations

import io
import json
import os

import pytest

from pegpar import joblog
from pegpar.joblog import Record
from pegpar.state import StateDir
from pegpar.status import render, snapshot, status, watch_frames

T0 = 1700000000.0

QUEUE = """\
- echo plain
- command: ["train {{ lr }} {{ seed }}"]
  lr: [0.1, 0.01]
  seed: [1, 2, 3]
"""  # 1 + 2*3 = 7 jobs


@pytest.fixture
def here(tmp_path):
    (tmp_path / "queue.yaml").write_text(QUEUE)
    (tmp_path / "consumed.yaml").write_text("- echo a\n- command: [x]\n  p: [1]\n# note\n- |\n  two\n  - lines\n")
    os.makedirs(tmp_path / ".pegpar")
    return tmp_path


@pytest.fixture
def live(here):
    """This process plays the controller: claimed, with a snapshot of three sub-nodes."""
    state = StateDir(str(here / ".pegpar"))
    state.claim({"pid": os.getpid(), "started": T0, "mode": "q", "run": "r"})
    state.write_status({
        "pid": os.getpid(), "mode": "q", "run": "r", "started": T0, "updated": T0 + 60,
        "joblog": state.joblog_path(), "running": 1, "done": 4, "failed": 1, "stopping": False,
        "nodes": [
            {"name": "node-1 (gpu=0)", "host": "node-1", "state": "running",
             "job": {"seq": 41, "command": "train 0.1 1\n--fast", "since": T0 + 30}},
            {"name": "node-1 (gpu=1)", "host": "node-1", "state": "idle", "job": None},
            {"name": "node-2", "host": "node-2", "state": "down", "job": None},
        ]})
    yield here
    state.release()


def test_live_controller_json(live):
    data = json.loads(status(str(live / "queue.yaml"), as_json=True, watch=False))
    assert data["controller"]["pid"] == os.getpid()
    assert (data["queued"], data["running"], data["done"], data["failed"]) == (7, 1, 4, 1)
    assert [n["state"] for n in data["nodes"]] == ["running", "idle", "down"]
    assert data["jobs_running"] == [{"seq": 41, "node": "node-1 (gpu=0)",
                                     "command": "train 0.1 1\n--fast", "since": T0 + 30, "slots": [0]}]
    assert data["elapsed"] > 0


def test_live_controller_text(live):
    text = render(snapshot(str(live / "queue.yaml"), now=T0 + 90), now=T0 + 90, width=100)
    lines = text.splitlines()
    assert f"pegpar running (pid {os.getpid()}, queue mode" in lines[0] and lines[0].endswith("1m30s)")
    assert lines[1].split() == ["queued", "7", "running", "1", "done", "4", "failed", "1"]
    assert "controller last reported 30.0s ago" in lines[2]
    table = text[text.index("SUB-NODE"):].splitlines()
    assert table[1].split()[:4] == ["node-1", "(gpu=0)", "running", "#41"]
    assert table[1].endswith("for 1m00s: train 0.1 1\\n--fast")
    assert table[2].split() == ["node-1", "(gpu=1)", "idle"]
    assert table[3].split() == ["node-2", "down"]


def test_long_commands_are_cut_to_the_width(live):
    data = snapshot(str(live / "queue.yaml"), now=T0 + 60)
    data["nodes"][0]["job"]["command"] = "x" * 500
    assert all(len(line) <= 80 for line in render(data, now=T0 + 60, width=80).splitlines()[3:])


def test_an_ended_run_counts_its_own_jobs_from_the_joblog(here):
    state = StateDir(str(here / ".pegpar"))
    joblog.append(state.joblog_path(), [
        Record(1, "n", T0 - 500, 1.0, 0, 0, 1, 0, "earlier run, failed"),
        Record(2, "n", T0 + 5, 10.0, 0, 0, 0, 0, "a"),
        Record(3, "n", T0 + 5, 95.0, 0, 0, 0, 9, "b"),
        Record(4, "n", T0 + 20, 1.0, 0, 0, 0, 0, "c"),
    ])
    state.journal_append([{"event": "run", "run": "r", "pid": 4242, "started": T0, "mode": "b"}] +
                         [{"event": "dispatch", "run": "r", "seq": s, "node": "n", "command": "x", "start": T0}
                          for s in (2, 3, 4, 5)])
    data = snapshot(str(here / "queue.yaml"))
    assert data["controller"] is None
    assert (data["queued"], data["done"], data["failed"], data["running"]) == (7, 2, 1, 0)
    assert data["elapsed"] == 100.0
    assert data["interrupted"] == 1  # #5 was dispatched and never recorded
    assert data["consumed"] == 3
    text = render(data)
    assert "no pegpar running; last run started" in text and "pid 4242, broadcast mode, lasted 1m40s" in text
    assert text.splitlines()[1].split() == ["queued", "7", "done", "2", "failed", "1", "consumed", "3"]
    assert "1 job(s) of the last run have no result" in text


def test_a_job_run_again_counts_by_its_last_attempt_as_the_summary_does(here):
    """A job put back from a down host (or retried) failed once in the joblog
    and then ran again: the run's summary does not count it failed, nor does
    status; it says how many failed attempts ran again."""
    state = StateDir(str(here / ".pegpar"))
    joblog.append(state.joblog_path(), [
        Record(1, "node-2", T0 + 1, 1.0, 0, 0, 255, 0, "a"),
        Record(2, "node-1", T0 + 3, 1.0, 0, 0, 0, 0, "a"),
        Record(3, "node-1", T0 + 5, 1.0, 0, 0, 2, 0, "b"),
    ])
    state.journal_append([{"event": "run", "run": "r", "pid": 4242, "started": T0, "mode": "q"}] +
                         [{"event": "dispatch", "run": "r", "seq": s, "node": "n", "command": c, "canonical": c,
                           "start": T0} for s, c in ((1, "a"), (2, "a"), (3, "b"))]
                         + [{"event": "again", "run": "r", "seq": 1}])
    data = snapshot(str(here / "queue.yaml"))
    assert (data["done"], data["failed"], data["ran_again"]) == (1, 1, 1)
    assert "failed 1 (1 failed attempt(s) ran again)" in render(data)


def test_without_a_journal_the_whole_joblog_counts(here):
    joblog.append(StateDir(str(here / ".pegpar")).joblog_path(), [
        Record(1, "n", T0, 1.0, 0, 0, 1, 0, "x"), Record(2, "n", T0, 1.0, 0, 0, 0, 0, "y")])
    data = snapshot(str(here / "queue.yaml"))
    assert (data["done"], data["failed"], data["last_run"]) == (1, 1, None)


def test_a_stale_claim_reads_as_not_running(here):
    (here / ".pegpar" / "controller.json").write_text(json.dumps({"pid": os.getpid(), "started": T0}))
    assert snapshot(str(here / "queue.yaml"))["controller"] is None  # nobody holds the lock


def test_never_ran_and_no_queue(tmp_path):
    data = snapshot(str(tmp_path / "queue.yaml"))
    assert (data["controller"], data["queued"], data["done"], data["consumed"]) == (None, 0, 0, 0)
    assert render(data).startswith(f"{tmp_path / 'queue.yaml'}: no pegpar running\n")
    assert not (tmp_path / ".pegpar").exists()


def test_a_broken_queue_is_reported_not_raised(here):
    (here / "queue.yaml").write_text("- command: [a\n")
    data = snapshot(str(here / "queue.yaml"))
    assert data["queued"] is None and "queue.yaml" in data["queue_error"]
    assert "queued ?" in render(data) and "the queue has an error: " in render(data)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_redraws_in_place(live):
    out = _Terminal()
    watch_frames(str(live / "queue.yaml"), as_json=False, out=out, interval=0, frames=2)
    frames = out.getvalue().split("\033[H")[1:]
    assert len(frames) == 2 and all(f.endswith("\033[J") and "node-2" in f for f in frames)
    out = io.StringIO()  # not a terminal: plain frames, no escape codes
    watch_frames(str(live / "queue.yaml"), as_json=False, out=out, interval=0, frames=2)
    assert "\033" not in out.getvalue() and out.getvalue().count("node-2") == 2
    out = io.StringIO()
    watch_frames(str(live / "queue.yaml"), as_json=True, out=out, interval=0, frames=2)
    assert [json.loads(line)["done"] for line in out.getvalue().splitlines()] == [4, 4]


def test_the_status_text_is_the_whole_snapshot_and_follows_every_change(tmp_path):
    """The controller's status.json: its sub-nodes' part is kept from one
    second to the next, and made again when a job starts or ends on one or a
    host goes down; `updated` is new each time."""
    from pegpar import backend, controller, report
    from pegpar.expand import SubNode
    from pegpar.output import Printer
    from pegpar.queue import QueueFile

    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo later\n")
    queue.chmod(0o600)
    nodes = [SubNode("a", "h1", (), False, slots=2), SubNode("b", "h2", (), False)]
    ctl = controller.Controller(controller.Options(queue_file=str(queue), hosts_file=str(tmp_path / "none.yaml")),
                                nodes, QueueFile(str(queue)), Printer(out=io.StringIO(), err=io.StringIO()))
    texts = report.StatusText()

    def look():
        data = json.loads(texts.text(ctl))
        whole = report.snapshot(ctl)
        assert abs(data.pop("updated") - whole.pop("updated")) < 5
        assert data == whole
        return {n["name"]: (n["state"], [j["seq"] for j in n["jobs"]], n["free"]) for n in data["nodes"]}

    assert look() == {"a": ("idle", [], [0, 1]), "b": ("idle", [], [0])}
    first = json.loads(texts.text(ctl))["updated"]
    ctl.busy[4] = backend.Running(4, nodes[0], "echo x", "o", "e", 1.0, None, (1,))
    ctl.dispatched += 1
    assert look() == {"a": ("running", [4], [0]), "b": ("idle", [], [0])}
    ctl.health.down["h2"] = "no answer"
    assert look() == {"a": ("running", [4], [0]), "b": ("down", [], [0])}
    del ctl.busy[4]  # ended
    assert look() == {"a": ("idle", [], [0, 1]), "b": ("down", [], [0])}
    ctl.busy[5] = backend.Running(5, nodes[1], "echo y", "o", "e", 1.0, None, (0,))  # ended and started in a second
    ctl.dispatched += 1
    del ctl.health.down["h2"]
    assert look() == {"a": ("idle", [], [0, 1]), "b": ("running", [5], [])}
    assert json.loads(texts.text(ctl))["updated"] >= first
