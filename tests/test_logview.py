"""`pegpar log` and `pegpar logs` on hand-made joblogs, journals and output files,
and on a joblog written by plain GNU parallel."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pegpar import joblog, logview
from pegpar.runtime import parallel_script
from pegpar.errors import UserError
from pegpar.joblog import Record
from pegpar.logview import duration, local_time, log, logs, several_logs
from pegpar.state import StateDir

T0 = 1700000000.0


@pytest.fixture
def queue(tmp_path):
    """A queue directory whose joblog holds an earlier run (#1, #2) and the last run (#3-#5)."""
    state = StateDir(str(tmp_path / ".pegpar"))
    os.makedirs(state.path)
    joblog.append(state.joblog_path(), [
        Record(1, "node-1 (gpu=0)", T0, 10.0, 0, 0, 0, 0, "echo one"),
        Record(2, "node-2", T0, 20.0, 0, 0, 3, 0, "exit 3"),
        Record(3, "node-1 (gpu=0)", T0 + 100, 10.0, 0, 0, 0, 0, "echo three"),
        Record(4, "node-1 (gpu=0)", T0 + 110, 10.0, 0, 0, 0, 0, "echo four"),
        Record(5, "node-2", T0 + 100, 40.0, 0, 0, -1, 15, "sleep 100"),
    ])
    state.journal_append([{"event": "run", "run": "r", "pid": 1, "started": T0 + 100, "mode": "q"}] + [
        {"event": "dispatch", "run": "r", "seq": s, "node": n, "command": c, "canonical": c, "start": T0 + 100}
        for s, n, c in ((3, "node-1 (gpu=0)", "echo three"), (4, "node-1 (gpu=0)", "echo four"),
                        (5, "node-2", "sleep 100"), (6, "node-2", "sleep 5"))])
    return str(tmp_path / "queue.yaml")


def seqs_of(tsv: str):
    return [int(line.split("\t")[0]) for line in tsv.splitlines()[1:]]


def test_table_shows_every_record_with_local_time_duration_and_exit(queue):
    text = log(queue)
    lines = text.splitlines()
    assert lines[0].split() == ["SEQ", "SUB-NODE", "START", "TIME", "EXIT", "COMMAND"]
    assert len(lines) == 6  # no controller runs: #6 has no record and is not shown
    assert lines[1].split()[:3] == ["1", "node-1", "(gpu=0)"]
    assert local_time(T0) in lines[1] and "10.0s" in lines[1] and lines[1].endswith("echo one")
    assert lines[2].split()[5] == "3"
    assert "SIGTERM" in lines[5]


def test_filters(queue):
    assert seqs_of(log(queue, tsv=True)) == [1, 2, 3, 4, 5]
    assert seqs_of(log(queue, failed=True, tsv=True)) == [2, 5]
    assert seqs_of(log(queue, node="node-2", tsv=True)) == [2, 5]
    assert seqs_of(log(queue, node="node-2", failed=True, last=True, tsv=True)) == [5]
    assert seqs_of(log(queue, last=True, tsv=True)) == [3, 4, 5]
    assert log(queue, node="nowhere") == "no job matches\n"


def test_running_jobs_come_from_the_journal_while_the_controller_runs(queue, tmp_path):
    assert seqs_of(log(queue, running=True, tsv=True)) == []
    state = StateDir(str(tmp_path / ".pegpar"))
    state.claim({"pid": os.getpid(), "started": T0 + 100, "run": "r"})
    try:
        rows = json.loads(log(queue, running=True, as_json=True, now=T0 + 130))
        assert [(r["seq"], r["node"], r["state"], r["runtime"], r["exitval"]) for r in rows] == \
            [(6, "node-2", "running", 30.0, None)]
        assert seqs_of(log(queue, running=True, failed=True, tsv=True)) == [2, 5, 6]
        assert "running" in log(queue).splitlines()[-1]
    finally:
        state.release()


def test_summary_per_sub_node_over_the_wall_span(queue):
    rows = json.loads(log(queue, summary=True, last=True, as_json=True))
    # the last run spans T0+100 .. T0+140 (40 s); node-1 was busy 20 s, node-2 40 s
    assert rows == [
        {"node": "node-1 (gpu=0)", "jobs": 2, "failed": 0, "busy": 20.0, "utilisation": 0.5, "slots": 1,
         "slot_hours": 20.0 / 3600},
        {"node": "node-2", "jobs": 1, "failed": 1, "busy": 40.0, "utilisation": 1.0, "slots": 1,
         "slot_hours": 40.0 / 3600},
        {"node": "(all)", "jobs": 3, "failed": 1, "busy": 60.0, "utilisation": 0.75, "slots": 2,
         "slot_hours": 60.0 / 3600},
    ]
    text = log(queue, summary=True, last=True)
    assert text.splitlines()[0].split() == ["SUB-NODE", "JOBS", "FAILED", "BUSY", "UTILISATION"]
    assert "50%" in text.splitlines()[1] and "75%" in text.splitlines()[3]
    assert log(queue, summary=True, tsv=True).splitlines()[0] == \
        "node\tjobs\tfailed\tbusy\tutilisation\tslots\tslot_hours"


def test_summary_counts_slot_hours_on_sub_nodes_of_several_slots(tmp_path):
    """A 4-slot sub-node ran a 2-slot job for an hour and a 1-slot job for two:
    4 slot-hours of 8 over the two hours; the 1-slot sub-node's job an hour of 2."""
    state = StateDir(str(tmp_path / ".pegpar"))
    os.makedirs(state.path)
    joblog.append(state.joblog_path(), [
        Record(1, "gpu-box", T0, 3600.0, 0, 0, 0, 0, "train a"),
        Record(2, "gpu-box", T0, 7200.0, 0, 0, 0, 0, "train b"),
        Record(3, "cpu-box", T0 + 3600, 3600.0, 0, 0, 0, 0, "prep"),
    ])
    with open(os.path.join(state.path, logview.SLOTS_FILE), "w") as f:
        f.write(logview.slots_line(1, "gpu-box", (0, 1), 4) + logview.slots_line(2, "gpu-box", (2,), 4))
    rows = json.loads(log(str(tmp_path / "queue.yaml"), summary=True, as_json=True))
    assert [(r["node"], r["slots"], r["slot_hours"], r["utilisation"]) for r in rows] == [
        ("gpu-box", 4, 4.0, 0.5), ("cpu-box", 1, 1.0, 0.5), ("(all)", 5, 5.0, 0.5)]
    text = log(str(tmp_path / "queue.yaml"), summary=True)
    assert text.splitlines()[0].split() == ["SUB-NODE", "JOBS", "FAILED", "BUSY", "SLOTS", "SLOT-HOURS", "UTILISATION"]
    assert text.splitlines()[1].split()[-3:] == ["4", "4.00", "50%"]


def test_json_and_tsv_keep_the_whole_command(tmp_path):
    state = StateDir(str(tmp_path / ".pegpar"))
    os.makedirs(state.path)
    joblog.append(state.joblog_path(), [Record(7, "localhost/1", T0, 1.5, 0, 0, 0, 0, "a\nb\tc")])
    queue = str(tmp_path / "queue.yaml")
    assert json.loads(log(queue, as_json=True))[0] == {
        "seq": 7, "node": "localhost/1", "start": T0, "runtime": 1.5, "exitval": 0, "signal": 0,
        "command": "a b c", "state": "ok"}
    line = log(queue, tsv=True).splitlines()[1].split("\t")
    assert line == ["7", "localhost/1", f"{T0:.3f}", "1.500", "0", "0", "ok", "a b c"]


def test_reads_a_joblog_written_by_plain_gnu_parallel(tmp_path):
    path = tmp_path / "plain.joblog"
    env = dict(os.environ, PARALLEL_HOME=str(tmp_path / "home"))
    subprocess.run(["perl", parallel_script(), "--joblog", str(path), "-j1", "sh", "-c", "{}", ":::",
                    "true", "exit 4"], env=env, timeout=60, capture_output=True)
    rows = json.loads(log(str(tmp_path / "queue.yaml"), joblog_path=str(path), as_json=True))
    assert [(r["seq"], r["exitval"], r["state"]) for r in rows] == [(1, 0, "ok"), (2, 4, "failed")]
    assert rows[1]["command"] == "sh -c 'exit 4'"
    assert json.loads(log(str(tmp_path / "queue.yaml"), joblog_path=str(path), failed=True,
                          summary=True, as_json=True))[-1]["failed"] == 1


def test_missing_joblogs(tmp_path):
    queue = str(tmp_path / "queue.yaml")
    assert log(queue).startswith("no job has run yet")
    with pytest.raises(UserError) as err:
        log(queue, joblog_path=str(tmp_path / "nope.log"))
    assert err.value.where.endswith("nope.log")
    with pytest.raises(UserError):
        log(queue, last=True)


def test_duration_is_short_and_readable():
    assert [duration(s) for s in (4.25, 65, 3 * 3600 + 120, 90000)] == ["4.2s", "1m05s", "3h02m", "1d01h"]


def write_output(tmp_path, stem: str, out: bytes, err: bytes) -> None:
    folder = tmp_path / ".pegpar" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / stem).write_bytes(out)
    (folder / (stem + ".err")).write_bytes(err)


def test_logs_prints_stdout_then_stderr(tmp_path):
    write_output(tmp_path, "12.node-1_gpu=0", b"out 1\nout 2", b"err 1\n")
    write_output(tmp_path, "1.node-2", b"other\n", b"")
    queue = str(tmp_path / "queue.yaml")
    assert logs(queue, 12) == "out 1\nout 2\nerr 1\n"
    assert logs(queue, 12, which="err") == "err 1\n"
    assert logs(queue, 12, which="out") == "out 1\nout 2"
    assert logs(queue, 1) == "other\n"


def test_logs_of_a_sub_node_whose_name_ends_in_err(tmp_path):
    write_output(tmp_path, "3.box.err", b"stdout\n", b"stderr\n")
    assert logs(str(tmp_path / "queue.yaml"), 3) == "stdout\nstderr\n"


def test_logs_missing_say_why(queue):
    with pytest.raises(UserError) as err:
        logs(queue, 4)  # in the joblog, but its output was not kept
    assert "no output was kept for job #4" in str(err.value) and "--no-logs" in str(err.value)
    with pytest.raises(UserError) as err:
        logs(queue, 99)
    assert "no job #99" in str(err.value)


def test_failed_means_jobs_whose_last_attempt_failed(queue, tmp_path):
    """#5 failed and pegpar ran it again (its journal's `again` mark): the job's
    last attempt decides, so #5 is no longer a failed job of the last run."""
    assert seqs_of(log(queue, failed=True, tsv=True)) == [2, 5]
    StateDir(str(tmp_path / ".pegpar")).journal_append([{"event": "again", "run": "r", "seq": 5}])
    assert seqs_of(log(queue, failed=True, tsv=True)) == [2]
    assert seqs_of(log(queue, tsv=True)) == [1, 2, 3, 4, 5]  # the attempt itself is still in the joblog


def test_logs_of_several_jobs_and_of_the_failed_ones_each_under_a_header(queue, tmp_path):
    write_output(tmp_path, "3.node-1_gpu=0", b"three\n", b"")
    write_output(tmp_path, "5.node-2", b"five\n", b"killed\n")
    assert several_logs(queue, [3]) == "three\n"  # one job: as `pegpar logs 3` always printed it
    assert several_logs(queue, [3, 5]) == ("==> #3 on node-1 (gpu=0) (exit 0): echo three <==\nthree\n\n"
                                           "==> #5 on node-2 (exit -1): sleep 100 <==\nfive\nkilled\n")
    assert several_logs(queue, [], failed=True) == "==> #5 on node-2 (exit -1): sleep 100 <==\nfive\nkilled\n"
    StateDir(str(tmp_path / ".pegpar")).journal_append([{"event": "again", "run": "r", "seq": 5}])
    assert several_logs(queue, [], failed=True) == "no job of the last run failed\n"
