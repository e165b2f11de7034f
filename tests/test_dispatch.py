"""The dispatch turn on its own (its launch recorded instead of run): what it
takes from the queue file, and when it does not look at it."""

from __future__ import annotations

import io
import types

from pegpar import controller
from pegpar.expand import SubNode
from pegpar.output import Printer
from pegpar.queue import QueueFile


def test_with_every_sub_node_busy_no_turn_looks_at_the_jobs_or_the_queue_until_one_frees(tmp_path):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo 1\n- echo 2\n- echo 3\n")
    queue.chmod(0o600)
    a, b = SubNode("a", "a", (), True), SubNode("b", "b", (), True)
    ctl = controller.Controller(controller.Options(queue_file=str(queue), hosts_file=None), [a],
                                QueueFile(str(queue)), Printer(out=io.StringIO(), err=io.StringIO()))
    ctl.rt = types.SimpleNamespace(logs_dir=str(tmp_path), note_seq=lambda seq: None)
    takes = []
    take = ctl.source.take
    ctl.source.take = lambda *args, **kw: takes.append(1) or take(*args, **kw)
    scans = []  # looks at every running job
    held = ctl.held
    ctl.held = lambda: scans.append(1) or held()
    started = []

    def launch(placed):
        for r in placed:
            ctl.busy[r.seq] = r
            ctl.dispatched += 1
            started.append((r.node.name, r.command))
    ctl.launch = launch

    ctl._dispatch()
    assert started == [("a", "echo 1")] and len(takes) == 1
    for _ in range(3):
        ctl._dispatch()
    with open(queue, "a") as f:
        f.write("- echo 4\n")  # a change of the queue file makes no room
    ctl._dispatch()
    assert started == [("a", "echo 1")] and len(takes) == 1 and len(scans) == 2
    assert queue.read_text() == "- echo 2\n- echo 3\n- echo 4\n"

    ctl.busy.clear()  # its job ended
    ctl._dispatch()
    assert started == [("a", "echo 1"), ("a", "echo 2")] and len(takes) == 2
    ctl._dispatch()
    assert len(takes) == 2
    ctl.nodes = [a, b]  # hosts.yaml gained a sub-node
    ctl._dispatch()
    assert started[-1] == ("b", "echo 3") and len(takes) == 3
    ctl.health.down["b"] = "no answer"
    del ctl.busy[max(ctl.busy)]  # b's job ended, but its host went down
    ctl._dispatch()
    assert len(started) == 3
    del ctl.health.down["b"]  # and came back
    ctl._dispatch()
    assert started[-1] == ("b", "echo 4")
    assert queue.read_text() == ""
