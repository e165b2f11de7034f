"""`pegpar stop` and `pegpar kill`: signals and kill requests reach the live
controller, and a queue with no live controller says so."""

from __future__ import annotations

import json
import os

import pytest

from pegpar.control import kill_one, stop
from pegpar.errors import UserError
from pegpar.state import StateDir
from test_state import HANG_GUARD, claim_in_subprocess


def test_stop_without_a_controller(tmp_path):
    queue = str(tmp_path / "queue.yaml")
    for kill in (False, True):
        with pytest.raises(UserError) as err:
            stop(queue, kill=kill)
        assert str(err.value) == f"no pegpar is running on {queue}"


def test_stop_signals_the_live_controller(tmp_path):
    child = claim_in_subprocess(str(tmp_path / ".pegpar"), {"started": 1.0}, on_usr1="asked to stop")
    try:
        text = stop(str(tmp_path / "queue.yaml"), kill=False)
        assert f"pegpar (pid {child.pid}) starts no new job" in text
        out, _ = child.communicate(timeout=HANG_GUARD)
        assert out.strip() == "asked to stop"
    finally:
        child.kill()
        child.wait(HANG_GUARD)


@pytest.fixture
def live(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    state.claim({"pid": os.getpid(), "started": 1.0, "run": "r"})
    state.journal_append([{"event": "run", "run": "r", "pid": os.getpid(), "started": 1.0, "mode": "q"}] + [
        {"event": "dispatch", "run": "r", "seq": seq, "node": node, "command": "sleep 9", "start": 1.0}
        for seq, node in ((3, "node-1 (gpu=0)"), (4, "node-1 (gpu=1)"), (5, "node-2"))] +
        [{"event": "done", "run": "r", "seq": 5, "exitval": 0, "signal": 0}])
    yield state
    state.release()


def requests(state: StateDir):
    folder = os.path.join(state.path, "control")
    return [json.load(open(os.path.join(folder, n))) for n in sorted(os.listdir(folder))]


def test_kill_one_job_by_number_or_sub_node(live, tmp_path):
    queue = str(tmp_path / "queue.yaml")
    assert kill_one(queue, 3, None) == f"asked pegpar (pid {os.getpid()}) to kill job #3\n"
    assert "job #4 on node-1 (gpu=1)" in kill_one(queue, None, "node-1 (gpu=1)")
    assert requests(live) == [{"kill": {"seq": 3}}, {"kill": {"seq": 4}}]


def test_kill_refuses_what_is_not_running(live, tmp_path):
    queue = str(tmp_path / "queue.yaml")
    with pytest.raises(UserError) as err:
        kill_one(queue, 5, None)  # it has ended
    assert "job #5 is not running" in str(err.value) and "#3 on node-1 (gpu=0)" in str(err.value)
    with pytest.raises(UserError) as err:
        kill_one(queue, None, "node-1")  # two sub-nodes start so
    assert "matches several" in str(err.value)
    with pytest.raises(UserError):
        kill_one(queue, None, "node-2")
    with pytest.raises(UserError):
        kill_one(queue, 3, "node-2")
    assert not os.path.exists(os.path.join(live.path, "control"))


def test_kill_without_a_controller(tmp_path):
    with pytest.raises(UserError) as err:
        kill_one(str(tmp_path / "queue.yaml"), 3, None)
    assert "no pegpar is running" in str(err.value)


def test_jobs_of_hosts_still_being_checked_go_back_when_pegpar_is_killed(tmp_path):
    """A job ended as if its host died, and the host is being asked about when
    pegpar is killed: the job goes back to the queue unasked (one may run
    twice, none is lost), and the check is stopped."""
    import io

    from pegpar import backend, controller
    from pegpar.expand import Job, SubNode
    from pegpar.joblog import Record
    from pegpar.output import Printer
    from pegpar.queue import QueueFile
    from pegpar.spec import Source

    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo later\n")
    queue.chmod(0o600)
    node = SubNode("node-9", "node-9", (), False)
    err = io.StringIO()
    ctl = controller.Controller(controller.Options(queue_file=str(queue), hosts_file=str(tmp_path / "none.yaml")),
                                [node], QueueFile(str(queue)), Printer(out=io.StringIO(), err=err))
    job = Job("echo lost?", (), Source(str(queue), 1), plain=True)
    running = backend.Running(7, node, "echo lost?", str(tmp_path / "7"), str(tmp_path / "7.err"), 0.0, job)

    class Check:
        killed = False

        def kill(self):
            Check.killed = True

    ended = Record(7, "node-9", 0.0, 1.0, 0, 0, 255, 0, "echo lost?")
    ctl.health.suspects["node-9"] = (Check(), [(running, ended, "")])
    ctl.health.settle_suspects()
    assert Check.killed and not ctl.health.suspects and ctl.summary.requeued == 1
    assert queue.read_text() == "- echo lost?\n- echo later\n"
    assert "job #7 goes back to the queue" in err.getvalue()
