"""The state directory: the controller's claim and its stale detection, the
status snapshot, the journal, control requests."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pegpar import state as state_module
from pegpar.errors import UserError
from pegpar.retry import plan, results
from pegpar.state import StateDir, compact, highest_seq, last_run, state_dir_for

HANG_GUARD = 30  # seconds; only a guard against a hung child, never a timing assertion


def claim_in_subprocess(state_dir: str, info: dict, on_usr1: str = "") -> subprocess.Popen:
    """A child process that claims `state_dir` and waits; returns once the claim
    is made. `on_usr1`: what the child prints on stdout when sent SIGUSR1."""
    code = textwrap.dedent(f"""
        import json, signal, sys, time
        from pegpar.state import StateDir
        if {on_usr1!r}:
            def said(*_):
                print({on_usr1!r}, flush=True)
                sys.exit(0)
            signal.signal(signal.SIGUSR1, said)
        state = StateDir({state_dir!r})
        state.claim(json.loads({json.dumps(info)!r}))
        print("claimed", flush=True)
        time.sleep({HANG_GUARD})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "claimed"
    return child


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_claim_writes_private_files_and_release_removes_the_claim(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.claim({"pid": os.getpid(), "started": 1700000000.0, "mode": "q"})
    assert mode_of(tmp_path / ".pegpar") == 0o700
    assert mode_of(tmp_path / ".pegpar" / "controller.json") == 0o600
    assert mode_of(tmp_path / ".pegpar" / "controller.lock") == 0o600
    assert state.controller()["mode"] == "q"
    assert StateDir(state.path).controller()["pid"] == os.getpid()
    state.release()
    assert state.controller() is None
    assert not (tmp_path / ".pegpar" / "controller.json").exists()
    state.release()  # twice is harmless


def test_readers_create_nothing(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    assert state.controller() is None
    assert state.read_status() is None
    assert state.journal() == []
    assert state.take_requests() == []
    assert state.last_run() is None
    assert not (tmp_path / ".pegpar").exists()


def test_a_live_controller_in_another_process_is_refused_with_pid_and_since(tmp_path):
    folder = str(tmp_path / ".pegpar")
    child = claim_in_subprocess(folder, {"started": 1700000000.0, "queue_file": "queue.yaml"})
    try:
        ctl = StateDir(folder).controller()
        assert ctl is not None and ctl["pid"] == child.pid
        with pytest.raises(UserError) as err:
            StateDir(folder).claim({"pid": os.getpid(), "queue_file": "queue.yaml"})
        message = str(err.value)
        assert f"pid {child.pid}" in message
        assert "since 2023-11-" in message  # 1700000000 is 2023-11-14/15 in every time zone
        assert err.value.where == "queue.yaml"
    finally:
        child.kill()
        child.wait(HANG_GUARD)


def test_a_claim_whose_process_was_killed_is_stale(tmp_path):
    folder = str(tmp_path / ".pegpar")
    child = claim_in_subprocess(folder, {"started": 1.0})
    os.kill(child.pid, signal.SIGKILL)
    child.wait(HANG_GUARD)
    assert (tmp_path / ".pegpar" / "controller.json").exists()  # left behind by kill -9
    assert StateDir(folder).controller() is None
    mine = StateDir(folder)
    mine.claim({"pid": os.getpid(), "started": 2.0})  # and it does not stand in the way
    assert StateDir(folder).controller()["started"] == 2.0
    mine.release()


def test_a_claim_file_naming_a_dead_pid_is_stale_even_if_the_lock_is_held(tmp_path):
    # e.g. the pid was written by a crashed controller and another process
    # happens to hold the lock for a moment
    folder = tmp_path / ".pegpar"
    child = claim_in_subprocess(str(folder), {"started": 1.0})
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(HANG_GUARD)
        (folder / "controller.json").write_text(json.dumps({"pid": dead.pid}))
        assert StateDir(str(folder)).controller() is None
    finally:
        child.kill()
        child.wait(HANG_GUARD)


def test_status_snapshot_round_trip_and_garbage(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.write_status({"pid": 1, "nodes": [{"name": "n", "state": "idle", "job": None}]})
    assert state.read_status()["nodes"][0]["name"] == "n"
    assert mode_of(tmp_path / ".pegpar" / "status.json") == 0o600
    (tmp_path / ".pegpar" / "status.json").write_text('{"pid": ')
    assert state.read_status() is None
    assert [p.name for p in (tmp_path / ".pegpar").iterdir() if p.name.startswith(".")] == []


def test_journal_appends_skips_a_torn_line_and_resets(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.journal_append([{"event": "run", "run": "r1"}, {"event": "dispatch", "run": "r1", "seq": 1}])
    with open(tmp_path / ".pegpar" / "journal", "a") as f:
        f.write('{"event": "done", "ru')  # a crash in the middle of a write
    assert [r["event"] for r in state.journal()] == ["run", "dispatch"]
    state.journal_append([{"event": "done", "run": "r1", "seq": 1, "exitval": 0, "signal": 0}])
    assert [r["event"] for r in state.journal()] == ["run", "dispatch", "done"]
    assert mode_of(tmp_path / ".pegpar" / "journal") == 0o600
    state.journal_reset([{"event": "run", "run": "r2"}])
    assert state.journal() == [{"event": "run", "run": "r2"}]


def test_last_run_keeps_only_the_last_runs_records():
    records = [
        {"event": "run", "run": "a", "mode": "q"},
        {"event": "dispatch", "run": "a", "seq": 1},
        {"event": "run", "run": "b", "mode": "b"},
        {"event": "dispatch", "run": "b", "seq": 2},
        {"event": "dispatch", "run": "b", "seq": 3},
        {"event": "done", "run": "a", "seq": 1, "exitval": 0},
        {"event": "done", "run": "b", "seq": 2, "exitval": 1},
    ]
    run = last_run(records)
    assert run.id == "b" and run.info["mode"] == "b"
    assert sorted(run.dispatched) == [2, 3]
    assert sorted(run.done) == [2]
    assert [d["seq"] for d in run.unfinished()] == [3]
    assert last_run([{"event": "dispatch", "run": "a", "seq": 1}]) is None


SWEEP = {"command": ["train {{ lr }}"], "lr": [0.1]}
# per job: its entry, and how it ended (None: still running)
JOBS = st.lists(st.tuples(st.sampled_from(["a", "b", "c", SWEEP, None]),
                          st.sampled_from([None, (0, 0), (1, 0), (0, 15), (2, 0)])), max_size=40)


def journal_of(jobs, first_seq=1, lag=3):
    """A run's records as a controller writes them: each job's done record a
    few dispatches after its own."""
    records = [{"event": "seqs", "seq": first_seq - 1}, {"event": "run", "run": "r", "mode": "q"}]
    ends = []
    for i, (canonical, end) in enumerate(jobs):
        seq = first_seq + i
        records.append({"event": "dispatch", "run": "r", "seq": seq, "node": "n", "canonical": canonical,
                        "command": str(canonical)})
        if end is not None:
            ends.append({"event": "done", "run": "r", "seq": seq, "exitval": end[0], "signal": end[1]})
        if len(ends) > lag:
            records.append(ends.pop(0))
    return records + ends


def what_readers_see(records):
    """Everything `pegpar status`, `log`, `retry` and recovery read in a journal."""
    run = last_run(records)
    todo = plan(run, results(run, []), ())
    return (run.id, highest_seq(records), [seq for seq in range(-1, 50) if seq in run],
            sorted(d["seq"] for d in run.unfinished()),
            [[d["seq"] for d in part] for part in (todo.requeue, todo.from_stdin, todo.ran_again, todo.queued)])


@settings(max_examples=300, deadline=None)
@given(JOBS, st.integers(min_value=2), st.integers(min_value=2))
def test_compaction_changes_nothing_a_reader_sees(jobs, first, second):
    records = journal_of(jobs)
    assert what_readers_see(compact(records)) == what_readers_see(records)
    assert compact(compact(records)) == compact(records)
    # compacted twice during the run, appended to in between and after
    first, second = sorted((first % (len(records) + 1), second % (len(records) + 1)))
    first, second = max(first, 2), max(second, 2)
    again = compact(compact(records[:first]) + records[first:second]) + records[second:]
    assert what_readers_see(again) == what_readers_see(records)


def test_compaction_keeps_failures_running_jobs_and_again_and_left_marks():
    left = [{"event": "left", "run": "r", "seq": 12, "host": "h"}, {"event": "left", "run": "r", "seq": 3, "host": "g"},
            {"event": "left-killed", "run": "r", "seq": 3}]
    records = journal_of([("a", (0, 0)), ("b", (1, 0)), ("c", None), ("b", (0, 0)), ("a", (0, 0)),
                          ("d", (0, 0))], first_seq=11, lag=0) + [{"event": "again", "run": "r", "seq": 12}] + left
    out = compact(records)
    ran = {"event": "ran", "run": "r", "seqs": [[11, 11], [14, 16]]}
    assert out[:3] == [{"event": "seqs", "seq": 16}, records[1], ran]
    assert [(r["event"], r["seq"]) for r in out[3:]] == [("dispatch", 12), ("done", 12), ("dispatch", 13),
                                                          ("again", 12), ("left", 12), ("left", 3),
                                                          ("left-killed", 3)]
    assert last_run(out).again == {12}


def test_the_jobs_of_an_abandoned_pop_are_not_the_runs():
    records = journal_of([("a", (0, 0)), ("b", None), ("c", None)], lag=0) + [
        {"event": "untaken", "run": "r", "seq": 2}, {"event": "untaken", "run": "r", "seq": 3}]
    run = last_run(records)
    assert list(run.dispatched) == [1] and run.unfinished() == [] and 2 not in run
    out = compact(records)
    assert [r["event"] for r in out] == ["seqs", "run", "ran"] and highest_seq(out) == 3
    assert what_readers_see(out) == what_readers_see(records)


def test_a_journal_past_its_bound_compacts_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "COMPACT_AT", 4096)
    state = StateDir(str(tmp_path / ".pegpar"))
    jobs = [(f"job {i} " + "x" * 50, (1 if i % 97 == 0 else 0, 0)) for i in range(2000)]
    records = journal_of(jobs + [("y", None)])
    for i in range(0, len(records), 7):
        state.journal_append(records[i:i + 7])
    path = tmp_path / ".pegpar" / "journal"
    assert os.path.getsize(path) < 3 * 4096  # 2001 jobs written: about 300 KB without compaction
    assert what_readers_see(state.journal()) == what_readers_see(records)
    assert [d["seq"] for d in last_run(state.journal()).unfinished()] == [2001]


def test_a_compaction_that_fails_leaves_the_journal_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "COMPACT_AT", 2048)
    state = StateDir(str(tmp_path / ".pegpar"))
    records = journal_of([(f"job {i} " + "x" * 50, (0, 0)) for i in range(100)])

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # appends with sync=False: only the rewrite syncs
    for i in range(0, len(records), 10):
        state.journal_append(records[i:i + 10], sync=False)
    assert state.journal() == records
    assert os.listdir(tmp_path / ".pegpar") == ["journal"]  # no temporary file left behind


def test_requests_are_taken_once_in_order(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.request({"kill": {"seq": 12}})
    state.request({"kill": {"node": "node-1 (gpu=0)"}})
    (tmp_path / ".pegpar" / "control" / "zz-garbage.json").write_text("{")
    assert mode_of(tmp_path / ".pegpar" / "control") == 0o700
    assert state.take_requests() == [{"kill": {"seq": 12}}, {"kill": {"node": "node-1 (gpu=0)"}}]
    assert state.take_requests() == []
    assert os.listdir(tmp_path / ".pegpar" / "control") == []


def test_a_new_claim_drops_requests_left_for_an_earlier_controller(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.request({"kill": {"node": "node-1"}})
    state.claim({"pid": os.getpid()})
    try:
        assert state.take_requests() == []
    finally:
        state.release()


def test_joblog_path_follows_the_status_snapshot(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    assert state.joblog_path() == str(tmp_path / ".pegpar" / "joblog")
    state.write_status({"joblog": str(tmp_path / "elsewhere.log")})
    assert state.joblog_path() == str(tmp_path / "elsewhere.log")


def test_a_claim_file_naming_a_live_process_that_holds_no_lock_is_stale(tmp_path):
    # the pid of a dead controller, reused by some unrelated process
    folder = tmp_path / ".pegpar"
    folder.mkdir()
    (folder / "controller.json").write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))
    assert StateDir(str(folder)).controller() is None


def test_a_queue_file_and_a_link_to_it_share_their_state_directory(tmp_path):
    (tmp_path / "queue.yaml").write_text("")
    (tmp_path / "jobs.yaml").symlink_to("queue.yaml")
    (tmp_path / "other.yaml").write_text("")
    assert state_dir_for(str(tmp_path / "jobs.yaml")) == str(tmp_path / ".pegpar")
    assert state_dir_for(str(tmp_path / "other.yaml")) == str(tmp_path / ".pegpar-other.yaml")
