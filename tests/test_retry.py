"""`pegpar retry --failed`: which failed jobs of the last run go back into
queue.yaml, in what form, and what is skipped."""

from __future__ import annotations

import os

import pytest
import yaml

from pegpar import joblog
from pegpar.errors import UserError
from pegpar.joblog import Record
from pegpar.retry import plan, results, retry_failed
from pegpar.spec import QueueEntry, Source
from pegpar.state import Run, StateDir, last_run

T0 = 1700000000.0
SWEEP = {"command": ["train {{ lr }}"], "lr": [0.1]}


def dispatch(seq, canonical, run="r", command=None, node="n"):
    return {"event": "dispatch", "run": run, "seq": seq, "node": node, "host": "h",
            "command": command or str(canonical), "canonical": canonical, "source": "queue.yaml:1",
            "start": T0}


def done(seq, exitval, sig=0, run="r"):
    return {"event": "done", "run": run, "seq": seq, "exitval": exitval, "signal": sig}


def again(seq, run="r"):
    return {"event": "again", "run": run, "seq": seq}


def a_run(mode, *records) -> Run:
    return last_run([{"event": "run", "run": "r", "pid": 1, "started": T0, "mode": mode}, *records])


def test_results_prefer_the_journal_and_fall_back_to_the_joblog():
    run = a_run("q", dispatch(1, "a"), dispatch(2, "b"), dispatch(3, "c"), done(1, 0))
    records = [Record(1, "n", T0, 1, 0, 0, 5, 0, "a"), Record(2, "n", T0, 1, 0, 0, 0, 9, "b"),
               Record(9, "n", T0, 1, 0, 0, 1, 0, "another run")]
    assert results(run, records) == {1: (0, 0), 2: (0, 9)}


def test_plan_sorts_failed_jobs():
    run = a_run("q",
                dispatch(1, "ok"), done(1, 0),
                dispatch(2, "fails"), done(2, 1),
                dispatch(3, None, command="from stdin"), done(3, 2),
                dispatch(4, "flaky"), done(4, 1), again(4),
                dispatch(5, "flaky"), done(5, 0),  # pegpar's own retry succeeded
                dispatch(8, "twice in the queue"), done(8, 1),  # an identical entry is another job
                dispatch(9, "twice in the queue"), done(9, 0),
                dispatch(6, SWEEP), done(6, 0, 15),
                dispatch(7, "queued again"), done(7, 1))
    waiting = (QueueEntry((("command", ("queued again",)),), Source("queue.yaml", 1), True),)
    todo = plan(run, results(run, []), waiting)
    assert [d["seq"] for d in todo.requeue] == [2, 6, 8]
    assert [d["seq"] for d in todo.from_stdin] == [3]
    assert [d["seq"] for d in todo.ran_again] == [4]
    assert [d["seq"] for d in todo.queued] == [7]


def test_a_broadcast_step_that_failed_on_several_sub_nodes_is_queued_once():
    run = a_run("b", dispatch(1, "step", node="a"), dispatch(2, "step", node="b"), dispatch(3, "step", node="c"),
                done(1, 1), done(2, 0), done(3, 1))
    todo = plan(run, results(run, []), ())
    assert [d["seq"] for d in todo.requeue] == [1] and not todo.ran_again


def test_a_broadcast_step_that_succeeded_on_its_retry_is_not_queued_again():
    """`pegpar b --retries`: the step failed on b, ran again there and passed;
    a step that failed on c after its retries goes back once."""
    run = a_run("b", dispatch(1, "one", node="a"), dispatch(2, "one", node="b"), dispatch(3, "one", node="b"),
                dispatch(4, "two", node="c"), dispatch(5, "two", node="c"),
                done(1, 0), done(2, 1), again(2), done(3, 0), done(4, 1), again(4), done(5, 1))
    todo = plan(run, results(run, []), ())
    assert [d["seq"] for d in todo.ran_again] == [2, 4] and [d["seq"] for d in todo.requeue] == [5]


def test_waiting_compares_values_with_their_types():
    run = a_run("q", dispatch(1, {"command": ["x {{ n }}"], "n": [1]}), done(1, 1))
    as_text = QueueEntry((("command", ("x {{ n }}",)), ("n", ("1", "2"))), Source("queue.yaml", 1))
    as_number = QueueEntry((("command", ("x {{ n }}",)), ("n", (2, 1))), Source("queue.yaml", 1))
    assert [d["seq"] for d in plan(run, results(run, []), (as_text,)).requeue] == [1]
    assert [d["seq"] for d in plan(run, results(run, []), (as_number,)).queued] == [1]


@pytest.fixture
def ran(tmp_path):
    """A queue directory after a run with two failures, one of them from stdin."""
    (tmp_path / "queue.yaml").write_text("# my queue\n- echo waiting\n")
    state = StateDir(str(tmp_path / ".pegpar"))
    os.makedirs(state.path)
    state.journal_append([{"event": "run", "run": "r", "pid": 1, "started": T0, "mode": "q"},
                          dispatch(1, "echo fine"), dispatch(2, SWEEP), dispatch(3, None, command="xyz")])
    joblog.append(state.joblog_path(), [Record(1, "n", T0, 1, 0, 0, 0, 0, "echo fine"),
                                        Record(2, "n", T0, 1, 0, 0, 1, 0, "train 0.1"),
                                        Record(3, "n", T0, 1, 0, 0, 2, 0, "xyz")])
    return tmp_path


def test_retry_puts_failed_jobs_back_in_canonical_form(ran):
    queue = str(ran / "queue.yaml")
    text = retry_failed(queue)
    assert text.splitlines()[0].startswith("1 failed job(s) of the last run (started ")
    assert text.splitlines()[0].endswith("put back at the end of " + queue + ": #2")
    assert f"run `pegpar q --queue-file {queue}` to run them" in text  # not ./queue.yaml: named
    assert "#3 came from stdin and has no queue form; skipped: xyz" in text
    content = (ran / "queue.yaml").read_text()
    assert content.startswith("# my queue\n- echo waiting\n")
    assert yaml.safe_load(content) == ["echo waiting", SWEEP]
    again = retry_failed(queue)  # nothing added twice
    assert "#2 is already waiting in" in again and (ran / "queue.yaml").read_text() == content


def test_retry_creates_a_missing_queue_file(ran):
    os.unlink(ran / "queue.yaml")
    retry_failed(str(ran / "queue.yaml"))
    assert yaml.safe_load((ran / "queue.yaml").read_text()) == [SWEEP]


def test_nothing_failed(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.journal_append([{"event": "run", "run": "r", "pid": 1, "started": T0, "mode": "q"},
                          dispatch(1, "echo fine"), done(1, 0)])
    assert "no job failed in the last run" in retry_failed(str(tmp_path / "queue.yaml"))
    assert not (tmp_path / "queue.yaml").exists()


def test_no_run_recorded(tmp_path):
    with pytest.raises(UserError) as err:
        retry_failed(str(tmp_path / "queue.yaml"))
    assert "no run is recorded" in str(err.value)
