"""Waves against the real vendored GNU parallel, locally and on a real sshd node:
an open wave reports each job's end out of band, takes more jobs, records every
job with its true exit status or signal, and ends when its input is closed.
And a run of many short jobs is served by a few parallel invocations, not one
per job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from runner import pegpar, records, write_queue

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import backend, joblog, remote, runtime  # noqa: E402
from pegpar.expand import SubNode  # noqa: E402
from pegpar.waves import Waves, key  # noqa: E402

LOCAL = SubNode("localhost/1", "localhost", (), True)


def _runtime(tmp_path, ssh_config=None) -> runtime.Runtime:
    return runtime.runtime(str(tmp_path / ".pegpar"), ssh_config)


def _job(rt, seq, node, command) -> backend.Running:
    stem = os.path.join(rt.logs_dir, backend.log_name(seq, node))
    return backend.Running(seq, node, command, stem, stem + ".err", time.time())


def _until(read, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = read()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("timed out")


def _drive(rt, node, first, later):
    """Open a wave with `first`, hand it one job of `later` each time a job
    reports its end, close it when `later` runs out; (ends, records) by seq."""
    wave = backend.start_wave(rt, [_job(rt, 1, node, first)], slots=1, keep_open=True)
    ends, recs = {}, {}
    try:
        for seq, command in enumerate(later, 2):
            for job, status in _until(wave.new_ends):
                ends[job.seq] = status
            assert wave.room() == 1
            assert wave.extend(rt, [_job(rt, seq, node, command)])
            for job, rec in wave.new_records():
                recs[job.seq] = rec
        for job, status in _until(wave.new_ends):
            ends[job.seq] = status
        wave.close()
        wave.process.wait(timeout=30)
        for job, rec in wave.new_records():
            recs[job.seq] = rec
    finally:
        wave.terminate()
        wave.cleanup()
    return ends, recs


def test_an_open_local_wave_takes_jobs_as_earlier_ones_end(tmp_path):
    rt = _runtime(tmp_path)
    ends, recs = _drive(rt, LOCAL, "echo one", ["exit 3", "echo 'it''s' $((1 + 1))", "kill -TERM $$"])
    # the wave's own seqs, in input order: every job ended and is recorded once
    assert sorted(ends) == sorted(recs) == [1, 2, 3, 4]
    assert ends == {1: 0, 2: 3, 3: 0, 4: 143}
    # the job's own exit status reaches the joblog (killed by a signal: 128 + N, as a shell says)
    assert [(recs[i].exitval, recs[i].signal) for i in (1, 2, 3, 4)] == [(0, 0), (3, 0), (0, 0), (143, 0)]
    out = {seq: open(os.path.join(rt.logs_dir, backend.log_name(seq, LOCAL))).read() for seq in (1, 3)}
    assert out == {1: "one\n", 3: "its 2\n"}


def test_a_job_of_an_open_wave_is_recorded_with_the_runtime_its_end_report_tells(tmp_path):
    """parallel reaps a job of an open wave only once input comes (notes F1),
    and its joblog counts the wait in the job's runtime: pegpar's record
    takes the end from the job's end report."""
    rt = _runtime(tmp_path)
    wave = backend.start_wave(rt, [_job(rt, 1, LOCAL, "true")], slots=1, keep_open=True)
    try:
        _until(wave.new_ends)
        seen = time.time()  # the end was reported by now
        time.sleep(1.5)  # no input for a while: parallel does not reap the job
        assert wave.extend(rt, [_job(rt, 2, LOCAL, "true")])
        _until(wave.new_ends)
        wave.close()
        wave.process.wait(timeout=30)
        recs = {job.seq: rec for job, rec in wave.new_records()}
        raw = {rec.seq: rec for rec in joblog.read(wave.follower.path)}
    finally:
        wave.terminate()
        wave.cleanup()
    assert sorted(recs) == [1, 2] and recs[1].exitval == 0
    assert raw[1].runtime >= 1.5  # parallel's own record: the wait counted
    assert recs[1].start == raw[1].start
    assert 0 <= recs[1].runtime <= seen - recs[1].start + 0.01  # mtimes run on a coarse clock


def test_an_open_remote_wave_reports_ends_through_the_ssh_wrapper(tmp_path, cluster):
    rt = _runtime(tmp_path, cluster.ssh_config)
    node = SubNode("node-2", "node-2", (), False)
    ends, recs = _drive(rt, node, "echo $NODE", ["exit 7", "echo again $NODE"])
    assert ends == {1: 0, 2: 7, 3: 0}
    assert [(recs[i].exitval, recs[i].signal) for i in (1, 2, 3)] == [(0, 0), (7, 0), (0, 0)]
    out = [open(os.path.join(rt.logs_dir, backend.log_name(seq, node))).read() for seq in (1, 3)]
    assert out == ["node-2\n", "again node-2\n"]


def test_a_closed_wave_writes_no_end_reports_it_does_not_need(tmp_path):
    rt = _runtime(tmp_path)
    wave = backend.start_wave(rt, [_job(rt, 1, LOCAL, "true")])
    try:
        wave.process.wait(timeout=30)
        assert [rec.exitval for _, rec in wave.new_records()] == [0]
        assert not wave.is_open and wave.new_ends() == []
    finally:
        wave.cleanup()
    assert not [n for n in os.listdir(rt.waves_dir) if n.startswith("warm-")]


def _perl_counter(tmp_path, env):
    """A `perl` first on PATH that notes each start of perl ("p") and each
    start of perl on GNU parallel's script ("x": a compilation of it), then
    runs the real perl."""
    bin_dir = tmp_path / "count-bin"
    bin_dir.mkdir()
    log = tmp_path / "perl-starts"
    real = None
    for d in env["PATH"].split(os.pathsep):
        if os.access(os.path.join(d, "perl"), os.X_OK):
            real = os.path.join(d, "perl")
            break
    assert real is not None
    shim = bin_dir / "perl"
    shim.write_text(f"#!/bin/sh\necho p >> '{log}'\n"
                    f"for a; do [ \"$a\" = '{runtime.parallel_script()}' ] && echo x >> '{log}'; done\n"
                    f"exec '{real}' \"$@\"\n")
    shim.chmod(0o755)
    env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    return env, log


def test_many_short_jobs_share_a_few_parallel_invocations(tmp_path, pegpar_env):
    env, log = _perl_counter(tmp_path, pegpar_env)
    write_queue(tmp_path, "- command: ['echo $PARALLEL_SEQ $PARALLEL_PID {{ i }}']\n  i: [%s]\n"
                % ", ".join(str(i) for i in range(60)))
    r = pegpar(["q", "-j", "4", "--no-progress"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert sorted(int(rec.command.split()[-1]) for rec in recs) == list(range(60))
    assert all(rec.ok for rec in recs)
    # GNU parallel is compiled once, by the fork server; the parallels that
    # ran the jobs were forked from it
    assert log.read_text().count("x") == 1
    # and no perl starts a job: parallel forks its jobs itself (its own test
    # of that fails in this version, see PegparForkServer.pm)
    assert log.read_text().count("p") == 1
    # one open wave takes the jobs as sub-nodes free
    lines = [line.split()[1:] for line in r.stdout.splitlines()]  # after the [sub-node] prefix
    assert len({pid for _, pid, _ in lines}) <= 2, r.stdout
    # parallel's own seqs in the job output: jobs after the first wave's four
    # ran in the same invocation (seq 5 and beyond)
    assert max(int(seq) for seq, _, _ in lines) > 30, r.stdout


def _probe(rt, host, shared_ok):
    p = remote.Probe(rt, host, 10, shared_ok)
    return _until(lambda: (p.result(),) if p.result() is not None else None)[0], p


def test_a_probe_takes_a_live_shared_connection_for_an_answer(tmp_path, cluster):
    rt = _runtime(tmp_path, cluster.ssh_config)
    first, _ = _probe(rt, "node-3", shared_ok=True)  # no master yet: a real round trip, which starts one
    assert first == ""
    again, p = _probe(rt, "node-3", shared_ok=True)
    assert again == "" and p.process.args[1:3] == ["-O", "check"]
    cluster.kill_node("node-3")  # its master's connection drops with it, and the master exits

    def failed():
        why, p = _probe(rt, "node-3", shared_ok=True)
        return (why, p) if why else None
    gone, p = _until(failed, timeout=20)
    assert p.process.args[1:] == ["node-3", "true"], gone  # the real check said why


def test_a_probe_starts_the_shared_connection_of_every_session_group(tmp_path, cluster):
    """A host with 20 sub-nodes has 3 session groups: once the probe answers,
    each group's ControlMaster runs (jobs starting together never race to
    create one). A wrapper an earlier run left behind is rewritten: it may
    name another ssh config."""
    old = _runtime(tmp_path, cluster.ssh_config)
    stale = old.ssh_for(2)
    with open(stale, "w") as f:
        f.write("#!/bin/sh\nexit 255\n")
    os.chmod(stale, 0o700)
    rt = _runtime(tmp_path, cluster.ssh_config)
    nodes = [SubNode(f"node-2 (slot={i})", "node-2", (("slot", i),), False) for i in range(20)]
    groups = runtime.group_counts(nodes)
    assert groups == {"node-2": 3}
    assert remote.probe(rt, ["node-2"], 10, shared_ok=True, groups=groups) == {}
    for group in range(3):
        check = subprocess.run([rt.ssh_for(group), "-O", "check", "node-2"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        assert check.returncode == 0 and "Master running" in check.stderr, (group, check.stderr)


def test_a_wave_names_its_jobs_before_parallel_gets_them(tmp_path, monkeypatch):
    """Crash recovery finds a dispatched job by its wave's `.ids` file: were the
    job handed over first, a crash in between would leave a job that runs while
    recovery takes it for one never started, and runs it again."""
    rt = _runtime(tmp_path)
    findable = []  # at each hand-over to parallel: the jobs recovery would find
    write_all = backend._write_all

    def handing_over(fd, data):
        findable.append([seq for seq in (1, 2) if backend.left_wave(rt, seq) is not None])
        write_all(fd, data)

    monkeypatch.setattr(backend, "_write_all", handing_over)
    wave = backend.start_wave(rt, [_job(rt, 1, LOCAL, "true")], slots=1, keep_open=True)
    try:
        _until(wave.new_ends)
        assert wave.extend(rt, [_job(rt, 2, LOCAL, "true")])
    finally:
        wave.terminate()
        wave.cleanup()
    assert findable == [[1], [1, 2]]


def test_an_open_wave_with_no_job_left_running_is_closed(tmp_path):
    """parallel may reap a job that ended before it went back to wait for
    input and record it at once; pegpar then takes the job's end from the
    record, and the wave has nothing to flush. With no job running and none
    to come, it must still be closed, or its parallel waits for input forever
    (and so did the run)."""
    rt = _runtime(tmp_path)
    wave = backend.start_wave(rt, [_job(rt, 1, LOCAL, "true")], slots=1, keep_open=True)
    ctl = SimpleNamespace(nodes=[LOCAL], stopping=True, killing=False)
    waves = Waves(ctl)  # type: ignore[arg-type]
    waves.waves.append(wave)
    waves.open[key(LOCAL, {})] = wave
    try:
        _until(wave.new_ends)  # its end is known; the controller flushed nothing
        assert wave.running == 0 and wave.unflushed == 0 and wave.is_open
        waves.close_unflushed()
        assert not wave.is_open and not waves.open
        wave.process.wait(timeout=30)
        assert [rec.exitval for _, rec in wave.new_records()] == [0]
    finally:
        wave.terminate()
        wave.cleanup()


def test_a_new_list_of_sub_nodes_gets_its_session_groups_worked_out_again():
    def subs(host, count):
        return [SubNode(f"{host}/{i}", host, (), False) for i in range(count)]

    ctl = SimpleNamespace(nodes=subs("node-1", 9))
    waves = Waves(ctl)  # type: ignore[arg-type]
    assert waves.groups()["node-1/8"] == 1  # a 9th session: a second shared connection
    assert waves.groups() is waves.groups()  # the same list: not worked out at every launch
    ctl.nodes = subs("node-1", 9)[:8] + subs("node-2", 1)  # hosts.yaml changed
    assert waves.groups() == {**{f"node-1/{i}": 0 for i in range(8)}, "node-2/0": 0}


def test_parallel_messages_drop_the_time_out_notices_and_keep_the_rest():
    lines = ["parallel: Warning: This job was killed because it timed out:",
             "parallel: Warning: PEGPAR_JOB=k-1 sh -c 'sleep 5",
             "echo a second line'", "s=$?", 'exit $s',
             "parallel: Warning: something else",
             "parallel: Warning: This job was killed because it timed out:",
             "parallel: Warning: env PEGPAR_JOB=k-2 sh -c 'sleep 5'",
             "parallel: Error: the end"]
    assert backend.parallel_messages(lines) == ["parallel: Warning: something else", "parallel: Error: the end"]


def test_each_extra_shared_connection_has_its_own_time_to_answer(tmp_path, monkeypatch):
    """A host with 3 session groups whose ssh takes 0.6 s a connection,
    checked one connection at a time within 1 s each: the host answers (the
    three together take longer than the time one may take)."""
    rt = _runtime(tmp_path)
    slow = tmp_path / "slow-ssh"
    slow.write_text("#!/bin/sh\nsleep 0.6\n")
    slow.chmod(0o700)
    rt = runtime.Runtime(rt.state_dir, rt.run_dir, str(slow), None)
    monkeypatch.setattr(remote, "ssh_wrapper", lambda rt, group: str(slow))
    monkeypatch.setattr(remote, "MASTERS_AT_ONCE", 1)
    assert remote.probe(rt, ["h"], 1.0, groups={"h": 3}) == {}
    assert remote.probe(rt, ["h"], 0.3, groups={"h": 3}) == {"h": "no answer within 0.3 s"}


def test_kill_marks_without_user_go_to_a_folder_named_by_the_uid(tmp_path):
    """A node whose sessions have no USER still keeps each user's marks apart,
    and a job whose mark is there does not start."""
    from pegpar.remote import JOB_GUARD, KILL_SCRIPT

    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    subprocess.run(["sh", "-c", KILL_SCRIPT, "pegpar-kill", "q-7"], env=env, check=True, timeout=30)
    assert os.listdir(tmp_path / f"pegpar-killed-{os.getuid()}") == ["q-7"]
    ran = subprocess.run(["sh", "-c", JOB_GUARD, "echo started"], env=dict(env, PEGPAR_JOB="q-7"),
                         capture_output=True, text=True, timeout=30)
    assert (ran.returncode, ran.stdout) == (143, "")
    ran = subprocess.run(["sh", "-c", JOB_GUARD, "echo started"], env=dict(env, PEGPAR_JOB="q-8"),
                         capture_output=True, text=True, timeout=30)
    assert (ran.returncode, ran.stdout) == (0, "started\n")


def test_run_directories_nothing_uses_are_swept(tmp_path, monkeypatch):
    """One run directory per queue ever run must not pile up: a later pegpar
    removes those no pegpar holds, whose ssh masters are gone and that keep no
    wave's files; the others stay."""
    import fcntl
    import socket

    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    first = runtime.runtime(str(tmp_path / "a" / ".pegpar"), None)
    base = os.path.dirname(first.run_dir)

    def run_dir(name, *files):
        d = os.path.join(base, name)
        for sub in ("waves", "cm", "parallel-home"):
            os.makedirs(os.path.join(d, sub))
        for f in files:
            open(os.path.join(d, f), "w").close()
        return d

    stale = run_dir("000000000001")
    old_format = run_dir("000000000002", "ssh")  # no in-use file at all
    crashed = run_dir("000000000003", "waves/9.ids")  # a crashed run's jobs: recovery needs them
    held = run_dir("000000000004")
    holder = open(os.path.join(held, runtime.IN_USE), "w")
    fcntl.flock(holder, fcntl.LOCK_SH)  # a pegpar that uses it
    mastered = run_dir("000000000005")
    master = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    master.bind(os.path.join(mastered, "cm", "abc"))
    master.listen(1)
    dead_master = run_dir("000000000006")
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(os.path.join(dead_master, "cm", "abc"))
    gone.close()  # its socket file stays, nothing answers
    try:
        second = runtime.runtime(str(tmp_path / "b" / ".pegpar"), None)
        left = sorted(os.listdir(base))
    finally:
        holder.close()
        master.close()
    assert os.path.basename(second.run_dir) in left and os.path.basename(first.run_dir) in left
    assert not any(os.path.exists(d) for d in (stale, old_format, dead_master))
    assert all(os.path.exists(d) for d in (crashed, held, mastered))
    assert not [n for n in left if n.startswith(".gone")]


def test_a_warm_parallel_discarded_while_it_starts_leaves_nothing_behind(tmp_path):
    """While it starts, GNU parallel holds dummy `sleep 10101` children
    (reserve_process) that it kills later itself: discarded at that moment,
    they go with it, not on living for hours. The moment is short: each try
    watches a new parallel closely, until one is caught in it."""
    rt = _runtime(tmp_path)
    for _ in range(20):
        warm = backend.Warm(rt, LOCAL, 8, 0, None)
        dummies = _dummies_of(warm.process.pid, within=5.0)
        warm.discard()
        if dummies:
            break
    else:
        raise AssertionError("no GNU parallel was caught holding its dummy children")
    time.sleep(0.2)
    left = [pid for pid in dummies if os.path.exists(f"/proc/{pid}") and
            open(f"/proc/{pid}/stat").read().split(") ")[1][0] not in "ZX"]
    assert left == []


def _dummies_of(pid: int, within: float):
    """The `sleep 10101` children of `pid` once there are some, watched
    without pause (its own children list, not a scan of /proc)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            return []
        dummies = []
        for kid in kids:
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x0010101\x00":
                        dummies.append(kid)
            except OSError:
                continue
        if dummies:
            return dummies
    return []


def test_the_open_files_limit_is_raised_to_the_hard_one():
    """500 running jobs keep 1,000 output files open: a soft limit of 1,024
    (many systems' default) is raised to the hard one before a run."""
    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "from pegpar import proc\n"
            "proc.raise_open_files()\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard) or hard == resource.RLIM_INFINITY)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("user", ["", "alice"])
@pytest.mark.parametrize("tmpdir", ["", "/var/tmp/x y"])
def test_pegpar_names_the_local_kill_folder_as_the_node_shell_does(user, tmpdir):
    """Local jobs take the folder of kill marks from PEGPAR_KILLED (no fork of
    `id` per job where USER is unset); it must be the folder the shell computes
    on its own, which kills started by another pegpar may use."""
    from pegpar.remote import KILLED_DIR

    env = {"PATH": os.environ["PATH"], "USER": user, "TMPDIR": tmpdir}
    shell = subprocess.run(["sh", "-c", KILLED_DIR + '; printf %s "$d"'], env=env, capture_output=True,
                           text=True, check=True, timeout=30).stdout
    assert shell == runtime.killed_dir(env)
    assert shell == f"{tmpdir or '/tmp'}/pegpar-killed-{user or os.geteuid()}"
    given = subprocess.run(["sh", "-c", KILLED_DIR + '; printf %s "$d"'], env=dict(env, PEGPAR_KILLED="/k"),
                           capture_output=True, text=True, check=True, timeout=30).stdout
    assert given == "/k"
