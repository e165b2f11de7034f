"""Reliability end to end, on real sshd nodes: pegpar killed with SIGKILL and
restarted, nodes dying and coming back, unreachable hosts at start, job
timeouts, and the files pegpar keeps private."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml

from runner import cluster_hosts, pegpar, records, wait_for, write_queue
from test_cli_errors import BOMB

ROUNDS = 10  # kills of pegpar in the SIGKILL test
BATCH = 30  # jobs per queue in the SIGKILL test
# what a restarted pegpar says of a job that ran while no pegpar watched and
# whose end it cannot know: it may run twice
INTERRUPTED = r"job #\d+ on \S+ was interrupted.*?: echo (job-\d+-\d+)"
# what it says of a job it queues again (which is consumed once more)
REQUEUED = r"job #\d+ on \S+ (?:was interrupted|never started).*?: echo (job-\d+-\d+)"


def _spawn(args, cwd, env, name):
    """pegpar as a child writing to files (a killed child must not leave a
    pipe nobody drains); returns (process, stdout path, stderr path)."""
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    with open(out, "w") as o, open(err, "w") as e:
        p = subprocess.Popen([sys.executable, "-m", "pegpar"] + args, cwd=str(cwd), env=env,
                             stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    return p, out, err


def _ran(path):
    """How many times each job started, as the jobs themselves wrote it."""
    try:
        return collections.Counter(path.read_text().split())
    except FileNotFoundError:
        return collections.Counter()


def _batch_queue(ran, batch):
    names = [f"job-{batch}-{i}" for i in range(BATCH)]
    # the name comes first so the one-line summary of an interrupted job keeps it
    return names, "".join(f"- echo {n} >> {ran}; sleep 0.2; echo {n}\n" for n in names)


def _check_batch(tmp_path, names, ran, interrupted, requeued):
    recs = records(tmp_path)
    ok = {m.group(1) for r in recs if r.ok for m in [re.match(r"echo (job-\d+-\d+) ", r.command)] if m}
    missing = [n for n in names if n not in ok]
    assert not missing, f"no successful joblog record for {missing}"
    counts = _ran(ran)
    for n in names:
        limit = 2 if n in interrupted else 1
        assert 1 <= counts[n] <= limit, (n, counts[n], sorted(interrupted))
    # consumed.yaml lists a job once, and once more each time it was queued again
    consumed = collections.Counter(re.match(r"echo (job-\d+-\d+) ", c).group(1)
                                   for c in yaml.safe_load((tmp_path / "consumed.yaml").read_text()))
    for n in names:
        assert 1 <= consumed[n] <= 1 + requeued[n], (n, consumed[n], requeued[n])


def test_sigkill_at_random_moments_then_restart_runs_every_job_once(tmp_path, cluster, pegpar_env):
    """pegpar is killed with SIGKILL ROUNDS times at random moments (during its
    start, its recovery, dispatching, waiting) and started again each time.
    Jobs still running on the nodes go on (parallel runs in its own session);
    the next pegpar follows them to their end, records those that ended from
    the waves' joblogs, or reports them as interrupted and queues them again.
    In the end every job has one successful record, every seq names one job,
    and only an interrupted job may have run twice."""
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n- node-4\n")
    ran = tmp_path / "ran"
    seed = int(os.environ.get("PEGPAR_TEST_SEED", "0")) or random.randrange(1 << 30)
    print(f"PEGPAR_TEST_SEED={seed}")  # shown when the test fails, to replay the same moments
    rng = random.Random(seed)
    args = ["q", "--ssh-config", cluster.ssh_config]
    batch = 0
    names, text = _batch_queue(ran, batch)
    write_queue(tmp_path, text)
    interrupted = set()
    requeued = collections.Counter()
    kills = 0
    started = time.time()
    while kills < ROUNDS:
        p, _, err = _spawn(args, tmp_path, pegpar_env, f"round-{kills}")
        # pegpar needs about a second to start: some kills hit the start and the
        # recovery of the previous round's jobs, most hit a run in progress
        moment = rng.uniform(0.05, 1.0) if rng.random() < 0.2 else rng.uniform(1.0, 3.5)
        try:
            p.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            p.kill()
            kills += 1
        p.wait(timeout=60)
        interrupted |= set(re.findall(INTERRUPTED, err.read_text()))
        requeued.update(re.findall(REQUEUED, err.read_text()))
        if p.returncode == 0:  # the batch ran to its end before the kill: check it, start another
            _check_batch(tmp_path, names, ran, interrupted, requeued)
            batch += 1
            names, text = _batch_queue(ran, batch)
            write_queue(tmp_path, text)
        else:
            assert p.returncode == -signal.SIGKILL, err.read_text()
        assert time.time() - started < 120, "the kill rounds take far too long"
    final, _, err = _spawn(args, tmp_path, pegpar_env, "final")
    try:
        final.wait(timeout=120)
    finally:
        final.kill()
    log = err.read_text()
    assert final.returncode == 0, log
    interrupted |= set(re.findall(INTERRUPTED, log))
    requeued.update(re.findall(REQUEUED, log))
    _check_batch(tmp_path, names, ran, interrupted, requeued)
    # a job is recorded once, and a seq names one job only
    recs = records(tmp_path)
    successes = collections.Counter(r.command for r in recs if r.ok)
    assert max(successes.values()) == 1, [c for c, k in successes.items() if k > 1]
    seqs = collections.Counter(r.seq for r in recs)
    assert max(seqs.values()) == 1, [s for s, k in seqs.items() if k > 1]
    # and the waves' files, read, are gone (where runtime.runtime() keeps them)
    waves = os.path.join(_run_dir(tmp_path / ".pegpar", pegpar_env), "waves")
    assert [n for n in os.listdir(waves) if re.match(r"\d+\.", n)] == []


def test_interrupted_jobs_put_back_once_even_when_pegpar_dies_right_after(tmp_path, pegpar_env):
    """Recovery puts interrupted jobs back at the top of the queue, then resets
    its journal. Killed in between, the next pegpar finds the same jobs in the
    journal: the comment written above them tells it they are back already."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "dispatch", "run": "r", "seq": 1, "node": "localhost/1", "host": "localhost",
         "command": "echo one >> ran", "canonical": "echo one >> ran", "start": 1.0},
        {"event": "dispatch", "run": "r", "seq": 2, "node": "localhost/1", "host": "localhost",
         "command": "echo two >> ran", "canonical": "echo two >> ran", "start": 1.0}]))
    # as the first recovery left it: job #1 back at the top, then the kill; the
    # same seq of another run (state deleted since, seqs counted afresh) is no match
    write_queue(tmp_path, "# pegpar put back interrupted jobs: #2 (run old)\n"
                "# pegpar put back interrupted jobs: #1 (run r)\n- echo one >> ran\n- echo three >> ran\n")
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "1 interrupted job(s) put back at the top" in r.stderr, r.stderr
    assert "1 interrupted job(s) were put back in queue.yaml already" in r.stderr, r.stderr
    # #1 was back already and runs once; #2 goes back now (its own comment)
    assert sorted((tmp_path / "ran").read_text().split()) == ["one", "three", "two"]
    assert (tmp_path / "queue.yaml").read_text() == (
        "# pegpar put back interrupted jobs: #2 (run old)\n# pegpar put back interrupted jobs: #1 (run r)\n"
        "# pegpar put back interrupted jobs: #2 (run r)\n")


@pytest.mark.parametrize("appended", [True, False], ids=["consumed-written", "consumed-not-yet"])
def test_a_job_journalled_but_not_yet_out_of_the_queue_file_runs_once(tmp_path, pegpar_env, appended):
    """pegpar killed between journalling a job and replacing queue.yaml (a kill
    during the journal's fsync, or consumed.yaml's, lands there): the job is
    journalled and still in the queue file. The new queue file, never renamed,
    is still there; recovery sees it, does not put the job back, and the job
    runs once, from the queue; consumed.yaml lists it once, whether or not the
    pop had appended it there."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    pending = tmp_path / ".queue.yaml.abc123.tmp"
    pending.write_text("- echo two >> ran\n")  # the queue as the pop would have left it
    consumed = tmp_path / "consumed.yaml"
    before, line = "- echo zero >> ran\n", "- echo one >> ran\n"  # the pop's line in consumed.yaml
    consumed.write_text(before + (line if appended else ""))
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "dispatch", "run": "r", "seq": 1, "node": "localhost/1", "host": "localhost",
         "command": "echo one >> ran", "canonical": "echo one >> ran", "start": 1.0, "pending": str(pending),
         "consumed": [str(consumed), len(before), len(before + line)]}]))
    write_queue(tmp_path, "- echo one >> ran\n- echo two >> ran\n")
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "job #1 on localhost/1 never left queue.yaml (pegpar stopped while taking it)" in r.stderr, r.stderr
    assert "put back" not in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text().split() == ["one", "two"]
    assert not pending.exists()
    assert yaml.safe_load(consumed.read_text()) == ["echo zero >> ran", "echo one >> ran", "echo two >> ran"]


def test_a_job_of_an_abandoned_pop_is_not_recovered(tmp_path, pegpar_env):
    """A pop abandoned because queue.yaml was saved while it journalled its job
    leaves an "untaken" mark: the job stayed queued, and the next run neither
    puts it back nor reports it; it runs once, from the queue."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "dispatch", "run": "r", "seq": 1, "node": "localhost/1", "host": "localhost",
         "command": "echo one >> ran", "canonical": "echo one >> ran", "start": 1.0,
         "pending": str(tmp_path / ".queue.yaml.gone.tmp"), "consumed": [str(tmp_path / "consumed.yaml"), 0, 18]},
        {"event": "untaken", "run": "r", "seq": 1}]))
    write_queue(tmp_path, "- echo one >> ran\n")
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "#1" not in r.stderr and "put back" not in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text() == "one\n"
    assert yaml.safe_load((tmp_path / "consumed.yaml").read_text()) == ["echo one >> ran"]


def test_an_interrupted_broadcast_step_goes_back_once(tmp_path, pegpar_env):
    """A step interrupted on each of its sub-nodes is one entry of the queue: it
    goes back once, and runs once more on every sub-node."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "b"}] + [
        {"event": "dispatch", "run": "r", "seq": seq, "node": f"localhost/{seq}", "host": "localhost",
         "command": "echo $PARALLEL_SEQ >> ran", "canonical": "echo $PARALLEL_SEQ >> ran", "start": 1.0}
        for seq in (1, 2)]))
    write_queue(tmp_path, "- echo last >> ran\n")
    r = pegpar(["b", "-j", "2", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "1 interrupted job(s) put back at the top" in r.stderr, r.stderr
    assert [rec.command for rec in records(tmp_path)] == ["echo $PARALLEL_SEQ >> ran"] * 2 + ["echo last >> ran"] * 2
    assert sorted((tmp_path / "ran").read_text().split()) == ["1", "2", "last", "last"]


def test_a_job_followed_after_a_restart_keeps_its_retries(tmp_path, pegpar_env):
    """pegpar is killed while a job runs; the next pegpar follows the job to its
    end, and with --retries the failed job runs again, rebuilt from the
    journal's canonical form of it."""
    write_queue(tmp_path, "- command: ['echo {{ k }} >> ran; sleep 1.5; exit 3']\n  k: [x]\n")
    first, _, err = _spawn(["q", "--no-progress"], tmp_path, pegpar_env, "first")
    try:
        wait_for(lambda: (tmp_path / "ran").exists(), what="the job to start")
    finally:
        first.kill()
    assert first.wait(timeout=60) == -signal.SIGKILL, err.read_text()
    r = pegpar(["q", "--retries", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    assert re.search(r"job #1 on localhost/1 still runs .*; following it", r.stderr), r.stderr
    assert "job #1 failed on localhost/1; retrying (1/1)" in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text() == "x\nx\n"
    assert [(rec.command, rec.exitval) for rec in records(tmp_path)] == [("echo x >> ran; sleep 1.5; exit 3", 3)] * 2


def test_a_broadcast_step_still_running_after_a_restart_is_followed_not_run_again(tmp_path, pegpar_env):
    """pegpar b is killed during a step; the next pegpar b follows the step to
    its end on every sub-node, and starts the next step only then."""
    write_queue(tmp_path, "- echo s1 >> ran; sleep 2\n- echo s2 >> ran\n")
    first, _, err = _spawn(["b", "-j", "2", "--no-progress"], tmp_path, pegpar_env, "first")
    try:
        wait_for(lambda: (tmp_path / "ran").exists() and len((tmp_path / "ran").read_text().split()) == 2,
                 what="step 1 to start on both sub-nodes")
    finally:
        first.kill()
    assert first.wait(timeout=60) == -signal.SIGKILL, err.read_text()
    r = pegpar(["b", "-j", "2", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("still runs (started before pegpar stopped); following it") == 2, r.stderr
    assert "step 1: ok on 2/2" in r.stderr and "interrupted" not in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text().split() == ["s1", "s1", "s2", "s2"]
    recs = records(tmp_path)
    assert sorted(rec.command for rec in recs) == ["echo s1 >> ran; sleep 2"] * 2 + ["echo s2 >> ran"] * 2
    assert all(rec.ok for rec in recs)
    last_of_step_1 = max(rec.start + rec.runtime for rec in recs if "s1" in rec.command)
    assert all(rec.start >= last_of_step_1 - 0.01 for rec in recs if "s2" in rec.command), recs


# -- a node dies and comes back ------------------------------------------------------

def _node_jobs(ran, count, seconds):
    """Jobs that write `NAME NODE` to `ran` when they start (NODE: where they run)."""
    names = [f"job-{i}" for i in range(count)]
    return names, "".join(f"- echo {n} $NODE >> {ran}; sleep {seconds}; echo {n}\n" for n in names)


def _started_on(ran, node):
    try:
        return [line.split()[0] for line in ran.read_text().splitlines() if line.split()[1:] == [node]]
    except FileNotFoundError:
        return []


def _command_of(recs, name):
    return [r for r in recs if r.command.startswith(f"echo {name} ")]


def _check_node_death(tmp_path, names, victim, log):
    """The victim's job: recorded as failed with exit 255 (ssh's own failure;
    or 137 when the node's SIGKILL reached the job before its connection died),
    the reason said, and run again to success on another sub-node."""
    recs = records(tmp_path)
    dead = [r for r in recs if r.host == "node-2" and r.exitval in (255, 137)]
    assert [r.command.split()[1] for r in dead] == [victim], recs
    assert re.search(r"host node-2 is down \(.+\); job #%d goes back to the queue" % dead[0].seq, log), log
    again = [r for r in _command_of(recs, victim) if r.ok]
    assert len(again) == 1 and again[0].host != "node-2", recs
    for n in names:  # every job done, once
        assert len([r for r in _command_of(recs, n) if r.ok]) == 1, (n, recs)


def test_a_node_dying_mid_run_fails_its_job_which_runs_again_elsewhere(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    ran = tmp_path / "ran"
    names, text = _node_jobs(ran, 6, 3)
    write_queue(tmp_path, text)
    p, out, err = _spawn(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, "run")
    try:
        wait_for(lambda: _started_on(ran, "node-2"), what="a job running on node-2")
        [victim] = _started_on(ran, "node-2")
        cluster.kill_node(2)
        p.wait(timeout=120)  # the hang guard: pegpar must end by itself
    finally:
        p.kill()
    log = err.read_text()
    assert p.returncode == 0, log  # the job that failed with its node ran again and succeeded
    _check_node_death(tmp_path, names, victim, log)
    assert "1 re-queued from down hosts" in log
    assert sorted(out.read_text().split()[1::2]) == sorted(names)  # each printed its name once


def test_a_job_whose_connection_drops_runs_again_though_its_host_answers(tmp_path, cluster, pegpar_env):
    """node-1's ssh connections break while a job runs there (its sshd
    process dies; the node lives on and answers a new connection). The job's
    ssh exits 255, which its command did not: the job is killed on the node
    and runs again, instead of counting as failed."""
    cluster_hosts(tmp_path, "- node-1\n")
    starts, ran = tmp_path / "starts", tmp_path / "ran"
    write_queue(tmp_path, f"- 'echo $NODE >> {starts}; sleep 8; echo $NODE >> {ran}'\n")
    p, out, err = _spawn(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, "run")
    try:
        wait_for(lambda: starts.exists() and starts.read_text() == "node-1\n", what="the job started")
        cluster.drop_connections(1)
        p.wait(timeout=120)  # the hang guard: pegpar must end by itself
    finally:
        p.kill()
    log = err.read_text()
    assert p.returncode == 0, log
    assert "lost its connection to node-1" in log and "1 re-queued after a lost connection" in log, log
    assert starts.read_text() == "node-1\nnode-1\n" and ran.read_text() == "node-1\n"  # the first one killed
    assert sorted(r.exitval for r in records(tmp_path)) == [0, 255]


def test_a_job_that_ended_before_its_connection_broke_is_not_run_again(tmp_path, cluster, pegpar_env):
    """ssh exits 255 for a job whose command had ended: its status never got
    back, but the node's record of the job's end (`ends`, as the guard writes
    it) says it ran. It counts with that status and does not run again. The
    command plays both parts: it writes the record, then kills its own
    connection's sshd (the first sshd above it)."""
    from pegpar.remote import KILLED_DIR

    cluster_hosts(tmp_path, "- node-1\n")
    ran = tmp_path / "ran"
    write_queue(tmp_path, "- |\n"
                          f"  {KILLED_DIR}; mkdir -p \"$d\"; echo \"$PEGPAR_JOB 0\" >> \"$d/ends\"\n"
                          f"  echo $NODE >> {ran}\n"
                          "  p=$PPID\n"
                          "  while [ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done\n"
                          "  kill -9 $p; sleep 5\n")
    r = pegpar(["q", "--no-progress", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ended with status 0 on node-1; its connection broke before ssh reported it" in r.stderr, r.stderr
    assert ran.read_text() == "node-1\n" and [rec.exitval for rec in records(tmp_path)] == [255]


def test_a_command_that_exits_255_itself_fails_and_is_not_run_again(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, f"- 'echo $NODE >> {tmp_path / 'ran'}; exit 255'\n")
    r = pegpar(["q", "--no-progress", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "goes back" not in r.stderr and (tmp_path / "ran").read_text() == "node-1\n"
    assert [rec.exitval for rec in records(tmp_path)] == [255]


def test_a_node_restarted_comes_back_into_service(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    ran = tmp_path / "ran"
    names, text = _node_jobs(ran, 3, 3)
    write_queue(tmp_path, text)
    p, out, err = _spawn(["q", "--daemon", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, "run")
    try:
        wait_for(lambda: _started_on(ran, "node-2"), what="a job running on node-2")
        [victim] = _started_on(ran, "node-2")
        cluster.kill_node(2)
        wait_for(lambda: all(_command_of([r for r in records(tmp_path) if r.ok], n) for n in names),
                 timeout=120, what="every job done on the nodes left")
        _check_node_death(tmp_path, names, victim, err.read_text())
        assert _node_state(tmp_path, "node-2") == "down"
        cluster.restart_node(2)
        wait_for(lambda: _node_state(tmp_path, "node-2") == "idle", timeout=60, what="node-2 back")
        assert "host node-2 is back in service" in err.read_text()
        status = pegpar(["status", "--json"], tmp_path, pegpar_env)
        assert status.returncode == 0, status.stderr
        assert {n["name"]: n["state"] for n in json.loads(status.stdout)["nodes"]}["node-2"] != "down"
        # new jobs land on it again: three jobs for three idle sub-nodes
        more, text = _node_jobs(ran, 3, 1)
        more = [f"new-{n}" for n in more]
        added = pegpar(["add", *(f"echo {n} $NODE >> {ran}; sleep 1; echo {n}" for n in more)],
                       tmp_path, pegpar_env)
        assert added.returncode == 0, added.stderr
        wait_for(lambda: any(n in more for n in _started_on(ran, "node-2")), timeout=60,
                 what="a new job on node-2")
        wait_for(lambda: all(_command_of([r for r in records(tmp_path) if r.ok], n) for n in more),
                 timeout=60, what="the new jobs done")
        assert [r.ok for r in records(tmp_path) if r.host == "node-2"][-1]
        stopped = pegpar(["stop"], tmp_path, pegpar_env)
        assert stopped.returncode == 0, stopped.stderr
        p.wait(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err.read_text()


def _node_state(folder, name):
    try:
        with open(os.path.join(str(folder), ".pegpar", "status.json")) as f:
            nodes = json.load(f)["nodes"]
    except (OSError, ValueError, KeyError):
        return None
    return {n["name"]: n["state"] for n in nodes}.get(name)


# -- a host unreachable at start -------------------------------------------------------

@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_an_unreachable_host_at_start_is_left_out_with_the_reason(tmp_path, cluster, pegpar_env, how):
    """A dead node refuses at once; a frozen one accepts the TCP connection and
    never answers, so it is given up after the connect timeout (5 s) plus a
    second: either way the run goes on without it, bounded by that timeout."""
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    ran = tmp_path / "ran"
    names, text = _node_jobs(ran, 6, 0)
    write_queue(tmp_path, text)
    if how == "killed":
        cluster.kill_node(3)
    else:
        cluster.freeze_node(3)
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    # ssh's own words, or pegpar's when ssh has not given up by the probe's deadline
    reason = "Connection refused" if how == "killed" else r"timed out|no answer within 6 s"
    left_out = [line for line in r.stderr.splitlines() if line.startswith("pegpar: host node-3 left out: ")]
    assert len(left_out) == 1 and re.search(reason, left_out[0]), r.stderr
    assert "node-1" not in r.stderr and "node-2" not in r.stderr  # only the bad host is named
    recs = records(tmp_path)
    assert sorted(r.command.split()[1] for r in recs if r.ok) == sorted(names)
    assert {r.host for r in recs} <= {"node-1", "node-2"}
    assert {line.split()[1] for line in ran.read_text().splitlines()} <= {"node-1", "node-2"}


# -- timeouts ---------------------------------------------------------------------------

def test_a_job_over_its_timeout_is_killed_on_its_node_and_recorded_failed(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    ran = tmp_path / "ran"
    write_queue(tmp_path, f"- echo $NODE >> {ran}; sleep 30.4242; echo never\n")
    r = pegpar(["q", "--timeout", "1", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 1, r.stderr
    [rec] = records(tmp_path)
    assert not rec.ok and rec.signal != 0
    [failed] = [line for line in r.stderr.splitlines() if "FAILED #1" in line]
    assert failed.endswith(": timed out after 1 s"), r.stderr
    assert "PEGPAR_JOB" not in r.stderr and "killed because" not in r.stderr  # parallel's notice: said once, plainly
    assert "never" not in r.stdout
    assert ran.read_text() == "node-1\n"  # it did start on its node ...
    code, left = cluster.ssh("node-1", "ps -eo args | grep -c '[s]leep 30.4242' || true")
    assert left.strip() == "0"  # ... and nothing of it outlives pegpar there


# -- what pegpar keeps private, and host keys --------------------------------------------

def test_state_is_private_and_the_ssh_wrapper_keeps_host_key_checking(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, "- echo secret-1\n- echo secret-2 >&2\n- exit 3\n")
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    state = tmp_path / ".pegpar"
    seen = 0
    for folder, dirs, files in os.walk(state):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, (folder, name)
            seen += 1
    assert seen >= 6  # joblog, journal, job outputs at least
    run_dir = _run_dir(state, pegpar_env)
    wrapper = os.path.join(run_dir, "ssh")
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(wrapper).st_mode) == 0o700
    with open(wrapper) as f:
        text = f.read()
    assert "ControlMaster" in text and cluster.ssh_config in text  # the wrapper pegpar ran
    assert "stricthostkeychecking" not in text.lower()
    assert "userknownhostsfile" not in text.lower()


def _run_dir(state, env):
    """Where runtime.runtime() puts the run directory of a state directory."""
    key = hashlib.sha1(str(state).encode()).hexdigest()[:12]
    return os.path.join(env["TMPDIR"], f"pegpar-{os.getuid()}", key)


def test_a_host_with_an_unknown_key_is_refused(tmp_path, cluster, pegpar_env):
    """ssh's own default applies (BatchMode: unknown keys are refused): pegpar
    does not accept a host key that nobody has checked."""
    (tmp_path / "known_hosts").write_text("")
    config = open(cluster.ssh_config).read()
    config = re.sub(r"(?m)^\s*StrictHostKeyChecking.*\n", "", config)
    config = re.sub(r"(?m)^(\s*UserKnownHostsFile ).*$", rf"\g<1>{tmp_path / 'known_hosts'}", config)
    (tmp_path / "ssh_config").write_text(config)
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, "- echo should-not-run\n")
    r = pegpar(["q", "--ssh-config", str(tmp_path / "ssh_config")], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    assert re.search(r"host node-1 left out: .*Host key verification failed", r.stderr), r.stderr
    assert "should-not-run" not in r.stdout and not records(tmp_path)
    assert (tmp_path / "queue.yaml").read_text() == "- echo should-not-run\n"
    assert (tmp_path / "known_hosts").read_text() == ""


# -- bad input to `pegpar q` (file formats: test_cli_errors.py, through `pegpar expand`) ----

BIG = 100 * 1024 * 1024  # bytes in the oversized queue files


def _write_big_line(path):
    with open(path, "w") as f:
        f.write("- echo ")
        for _ in range(BIG // (1 << 20)):
            f.write("A" * (1 << 20))
        f.write("\n")


def _write_big_block(path):
    with open(path, "w") as f:
        f.write("- |\n")
        line = "  echo " + "B" * 1017 + "\n"  # 1 KiB
        for _ in range(BIG // 1024):
            f.write(line)


def _mode(path, mode):
    return lambda work: os.chmod(work / path, mode)


def _group_writable(path):
    """Group-writable, in a group that is not the owner's private one."""
    from test_queue import shared_group

    def prepare(work):
        os.chmod(work / path, 0o620)
        shared_group(work / path)
    return prepare


# name: (files, preparation, arguments, how the message starts (FILE[:LINE]), words it must hold,
#        whether nothing at all may be created: the error comes before pegpar starts)
BAD = {
    "ssh config missing": ({}, None, ["q", "--ssh-config", "no-such-config"], "no-such-config: ",
                           ["does not exist"], True),
    "joblog directory missing": ({}, None, ["q", "--joblog", "no-such-dir/joblog"], "no-such-dir/joblog: ",
                                 ["directory does not exist"], True),
    "queue file is a directory": ({"qdir/keep": "x"}, None, ["q", "--queue-file", "qdir"], "qdir: ",
                                  ["directory"], True),
    "read-only queue file": ({}, _mode("queue.yaml", 0o400), ["q"], "queue.yaml: ",
                             ["not readable and writable", "chmod u+rw"], True),
    "group-writable queue file": ({}, _group_writable("queue.yaml"), ["q"], "queue.yaml: ",
                                  ["writable by group or others", "--allow-shared-queue"], True),
    "world-writable hosts file": ({"hosts.yaml": "- localhost\n"}, _mode("hosts.yaml", 0o602), ["q"],
                                  "hosts.yaml: ", ["writable by group or others", "--allow-shared-queue"], True),
    "editor missing": ({}, None, ["l", "--editor", "/no/such/editor"], "editor '/no/such/editor' not found",
                       ["--editor"], True),
    "YAML bomb": ({"queue.yaml": BOMB}, None, ["q"], "queue.yaml:3: ", ["plain value"], False),
    "100 MB queue file, one line": ({}, lambda work: _write_big_line(work / "queue.yaml"), ["q"], "queue.yaml:1: ",
                                    ["larger than"], False),
    "100 MB queue file, one block scalar": ({}, lambda work: _write_big_block(work / "queue.yaml"), ["q"],
                                            "queue.yaml:1: ", ["larger than"], False),
}

# runs pegpar and prints the peak memory of its process tree (KiB)
MEASURED = ("import resource, subprocess, sys\n"
            "code = subprocess.call([sys.executable, '-m', 'pegpar'] + sys.argv[1:], stdin=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n")


def _tree(folder):
    """Every file under folder: its bytes and permission bits (None for a directory)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.stat().st_mode))
            for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_to_a_run_is_one_line_exit_2_and_changes_no_file(name, tmp_path, pegpar_env):
    files, prepare, args, where, words, nothing_created = BAD[name]
    work = tmp_path / "work"
    work.mkdir()
    (work / "queue.yaml").write_text("- echo ran >> ran\n")
    (work / "queue.yaml").chmod(0o600)
    for rel, content in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(content)
        (work / rel).chmod(0o600)
    if prepare:
        prepare(work)
    before = _tree(work)
    try:
        proc = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=work, env=pegpar_env,
                              capture_output=True, text=True, errors="replace", timeout=120)
        after = _tree(work)
    finally:
        for big in work.glob("*.yaml"):  # 100 MB files need not outlive the test
            if big.stat().st_size > 1 << 20:
                big.unlink()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert proc.stderr.startswith(f"pegpar: {where}"), proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert {k: v for k, v in after.items() if k in before} == before  # every file as it was
    if nothing_created:
        assert after.keys() == before.keys()
    assert not (work / "ran").exists()
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib * 1024 < BIG  # never the whole file in memory


@pytest.mark.parametrize("name", ["group-writable queue file", "world-writable hosts file"])
def test_allow_shared_queue_accepts_what_others_may_write(name, tmp_path, pegpar_env):
    files, prepare, args, *_ = BAD[name]
    (tmp_path / "queue.yaml").write_text("- echo ran >> ran\n")
    for rel, content in files.items():
        (tmp_path / rel).write_text(content)
    prepare(tmp_path)
    r = pegpar(args + ["--allow-shared-queue"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran").read_text() == "ran\n"


def test_a_job_run_again_elsewhere_is_killed_on_its_host_when_that_comes_back(tmp_path, cluster, pegpar_env, bg):
    """A frozen host looks dead: its job runs again on another host. When it
    answers again, what is left of the first copy there is killed, so the job
    does not finish twice. (The nodes are local processes: the first copy's
    shell is checked by its pid.)"""
    cluster_hosts(tmp_path, "- node-2\n- node-1\n")  # the job goes to node-2, the first free
    ran = tmp_path / "ran"
    write_queue(tmp_path, f"- command: ['echo $$ > {tmp_path}/pid-$NODE-{{{{i}}}}; echo start {{{{i}}}} $NODE >> {ran}; "
                          f"sleep 60; echo end {{{{i}}}} $NODE >> {ran}']\n  i: [7]\n")
    ctl = bg("q", "--daemon", "--no-progress", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: ran.exists() and " node-2" in ran.read_text(), timeout=30, what="a job on node-2")
    [on_two] = [line.split()[1] for line in ran.read_text().splitlines() if line.endswith(" node-2")]
    first = int((tmp_path / f"pid-node-2-{on_two}").read_text())
    cluster.freeze_node(2)
    wait_for(lambda: "host node-2 is down" in ctl.stderr(), timeout=60, what="node-2 given up")
    cluster.thaw_node(2)
    wait_for(lambda: "killing what is left on node-2" in ctl.stderr(), timeout=30, what="the leftover killed")

    def gone():
        try:
            os.kill(first, 0)
        except ProcessLookupError:
            return True
        return False
    wait_for(gone, timeout=30, what="the first copy's end")
    assert f"end {on_two} node-2" not in ran.read_text(), (ran.read_text(), ctl.stderr())
    wait_for(lambda: f"start {on_two} node-1" in ran.read_text(), timeout=30, what="the copy on node-1")
    r = pegpar(["stop", "--kill"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    ctl.wait(30)


def test_a_job_run_again_elsewhere_is_killed_by_the_next_run_when_its_host_was_still_down(
        tmp_path, cluster, pegpar_env):
    """As above, but the run ends while the host is still frozen: it says that
    the first copy may still run there, and the next run on the queue, which
    reaches the host, kills it, so the job does not finish twice."""
    cluster_hosts(tmp_path, "- node-2\n- node-1\n")  # the job goes to node-2, the first free
    ran = tmp_path / "ran"
    write_queue(tmp_path, f"- echo $$ > {tmp_path}/pid-$NODE; echo start $NODE >> {ran}; "
                          f"[ $NODE = node-1 ] || sleep 60; echo end $NODE >> {ran}\n")
    args = ["q", "--no-progress", "--ssh-config", cluster.ssh_config]
    first_run = subprocess.Popen([sys.executable, "-m", "pegpar"] + args, cwd=tmp_path, env=pegpar_env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ran.exists() and "start node-2" in ran.read_text(), timeout=30, what="the job on node-2")
        first = int((tmp_path / "pid-node-2").read_text())
        cluster.freeze_node(2)
        _, err = first_run.communicate(timeout=120)
    finally:
        first_run.kill()
    assert first_run.returncode == 0, err
    assert "job(s) #1 ran again elsewhere and may still run on node-2, which has not answered since" in err, err
    assert ran.read_text().splitlines() == ["start node-2", "start node-1", "end node-1"]
    cluster.thaw_node(2)
    r = pegpar(args, tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "killing what is left on node-2 of job(s) run again elsewhere: #1" in r.stderr, r.stderr
    with pytest.raises(ProcessLookupError):  # pegpar waits for its kills before it exits
        os.kill(first, 0)
    assert "end node-2" not in ran.read_text()
    r = pegpar(args, tmp_path, pegpar_env)  # done with: a later run does not name it again
    assert r.returncode == 0 and "#1" not in r.stderr, r.stderr


def test_a_job_left_on_a_host_no_longer_in_the_hosts_file_is_named(tmp_path, pegpar_env):
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "left", "run": "r", "seq": 4, "host": "node-9"}]))
    write_queue(tmp_path, "- true\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "job #4 ran again elsewhere and may still run on node-9, which is no longer in the hosts file" \
        in r.stderr, r.stderr
    assert '"left"' not in (state / "journal").read_text()  # named once


def test_a_job_that_failed_while_no_pegpar_ran_can_be_retried(tmp_path, pegpar_env, bg):
    """pegpar killed while its job runs; the job fails before the next start.
    The next run records it from GNU parallel's own record, and `retry
    --failed` then finds it among the last run's failures."""
    write_queue(tmp_path, "- touch started; sleep 1; exit 3\n")
    first = bg("q", "-j", "1", "--no-progress")
    wait_for(lambda: (tmp_path / "started").exists(), timeout=30, what="the job's start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    time.sleep(2)  # the job ends meanwhile
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"job #\d+ on localhost/1 ended while pegpar was not running \(exit 3\); recorded", r.stderr)
    r = pegpar(["retry", "--failed"], tmp_path, pegpar_env)
    assert r.returncode == 0 and "1 failed job(s) of the last run" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "queue.yaml").read_text().endswith("- touch started; sleep 1; exit 3\n")


def test_other_hosts_keep_taking_jobs_while_a_silent_host_is_checked(tmp_path, cluster, pegpar_env, bg):
    """node-2 freezes: its job's ssh gives up, and pegpar asks whether node-2
    still answers, which takes the connect timeout (12 s here). The question
    runs in the background: node-1 goes on starting jobs meanwhile."""
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, f"- command: ['sleep 0.3']\n  i: {list(range(400))}\n")
    ctl = bg("q", "--no-progress", "--connect-timeout", "12", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: any(r.host == "node-2" for r in records(tmp_path)), timeout=30, what="a job done on node-2")
    cluster.freeze_node(2)
    wait_for(lambda: "host node-2 is down" in ctl.stderr(), timeout=90, what="node-2 given up")
    r = pegpar(["stop", "--kill"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    ctl.wait(60)
    recs = records(tmp_path)
    [lost] = [rec for rec in recs if rec.host == "node-2" and rec.exitval == 255]
    end = lost.start + lost.runtime
    started = [rec for rec in recs if rec.host == "node-1" and end <= rec.start <= end + 10]
    assert len(started) >= 5, (lost, [rec.start - end for rec in recs if rec.host == "node-1"][-40:])


def test_a_crash_is_recovered_even_when_the_queue_file_is_gone(tmp_path, pegpar_env):
    """No queue file is an error for `pegpar q`, unless an earlier run left
    jobs without an end: recovery runs, and puts the job back in a new file."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "dispatch", "run": "r", "seq": 1, "node": "localhost/1", "host": "localhost",
         "command": "echo one >> ran", "canonical": "echo one >> ran", "start": 1.0}]))
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "never started" in r.stderr and (tmp_path / "ran").read_text() == "one\n", r.stderr


def test_a_job_that_renders_only_on_a_down_host_is_an_error_not_a_wait(tmp_path, cluster, pegpar_env):
    """`{{ gpu }}` exists only on node-1's sub-node, and node-1 is down: the
    job waits for no busy sub-node, so it is the entry's error (exit 2 at
    start), naming the sub-node it would run on."""
    cluster.kill_node(1)
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  gpu: [0]\n- node-2\n")
    write_queue(tmp_path, "- echo {{ gpu }}\n")
    r = pegpar(["q", "--ssh-config", cluster.ssh_config, "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 2, r.stderr
    assert "would render on node-1 (gpu=0), whose host is down" in r.stderr, r.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo {{ gpu }}\n"


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.1])
def test_a_kill_right_after_dispatch_leaves_nothing_running(tmp_path, cluster, pegpar_env, delay):
    """SIGTERM (a second Ctrl-C) just after the jobs were handed to GNU
    parallel: a job whose shell had not started when the kill reached its node
    must not start afterwards (the kill found nothing to kill then)."""
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n- node-4\n")
    tag = f"{int(delay * 100):03d}"
    write_queue(tmp_path, "".join(f"- sleep 40.{tag}{i}; echo never\n" for i in range(4)) + "- echo rest\n")
    p = subprocess.Popen([sys.executable, "-m", "pegpar", "q", "--no-progress", "--ssh-config", cluster.ssh_config],
                         cwd=tmp_path, env=pegpar_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    consumed = tmp_path / "consumed.yaml"
    try:
        wait_for(lambda: consumed.exists() and "sleep" in consumed.read_text(), timeout=30, what="a dispatch")
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    time.sleep(1)  # a job that escaped the kill would be running by now
    left = [cluster.ssh(n, f"ps -eo args | grep -c '[s]leep 40.{tag}' || true")[1].strip() for n in range(1, 5)]
    assert left == ["0"] * 4, (left, err)
    assert p.returncode == 1 and "never" not in out, (out, err)
    assert records(tmp_path) and all(not r.ok for r in records(tmp_path)), err


@pytest.mark.parametrize("untaken", [False, True])
def test_a_missing_queue_file_is_an_error_unless_a_crash_left_jobs(tmp_path, pegpar_env, untaken):
    """A job a crash left unfinished is recovered (put back and run) even with
    the queue file gone; a job of an abandoned pop is no such job."""
    state = tmp_path / ".pegpar"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "seqs", "seq": 0}, {"event": "run", "run": "r", "pid": 1, "started": 1.0, "mode": "q"},
        {"event": "dispatch", "run": "r", "seq": 1, "node": "localhost/1", "host": "localhost",
         "command": "echo one >> ran", "canonical": "echo one >> ran", "start": 1.0}]
        + ([{"event": "untaken", "run": "r", "seq": 1}] if untaken else [])))
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env)
    if untaken:
        assert r.returncode == 2 and "no such queue file" in r.stderr, r.stderr
        assert not (tmp_path / "ran").exists()
    else:
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "ran").read_text() == "one\n"
