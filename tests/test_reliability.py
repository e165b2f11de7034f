"""Reliability end to end, on real sshd nodes: pegpar killed with SIGKILL and
restarted, nodes dying and coming back, unreachable hosts at start, job
timeouts, and the files pegpar keeps private."""

from __future__ import annotations

import collections
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

from runner import cluster_hosts, pegpar, records, wait_for, write_queue

ROUNDS = 10  # kills of pegpar in the SIGKILL test
BATCH = 30  # jobs per queue in the SIGKILL test
# what a restarted pegpar says of a job that ran while no pegpar watched and
# whose end it cannot know: it may run twice
INTERRUPTED = r"job #\d+ on \S+ was interrupted.*?: echo (job-\d+-\d+)"


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


def _check_batch(tmp_path, names, ran, interrupted):
    recs = records(tmp_path)
    ok = {m.group(1) for r in recs if r.ok for m in [re.match(r"echo (job-\d+-\d+) ", r.command)] if m}
    missing = [n for n in names if n not in ok]
    assert not missing, f"no successful joblog record for {missing}"
    counts = _ran(ran)
    for n in names:
        limit = 2 if n in interrupted else 1
        assert 1 <= counts[n] <= limit, (n, counts[n], sorted(interrupted))


def test_sigkill_at_random_moments_then_restart_runs_every_job_once(tmp_path, cluster, pegpar_env):
    """pegpar is killed with SIGKILL ROUNDS times at random moments (during its
    start, its recovery, dispatching, waiting) and started again each time.
    Jobs still running on the nodes go on (parallel runs in its own session);
    the next pegpar records them from the waves' joblogs or reports them as
    interrupted and queues them again. In the end every job has a successful
    record, and only an interrupted job may have run twice."""
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
        if p.returncode == 0:  # the batch ran to its end before the kill: check it, start another
            _check_batch(tmp_path, names, ran, interrupted)
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
    _check_batch(tmp_path, names, ran, interrupted)
    # a job is recorded once, and a seq names one job only
    recs = records(tmp_path)
    successes = collections.Counter(r.command for r in recs if r.ok)
    assert max(successes.values()) == 1, [c for c, k in successes.items() if k > 1]
    seqs = collections.Counter(r.seq for r in recs)
    assert max(seqs.values()) == 1, [s for s, k in seqs.items() if k > 1]


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
    """The victim's job: recorded as failed with exit 255 (ssh's own failure),
    the reason said, and run again to success on another sub-node."""
    recs = records(tmp_path)
    dead = [r for r in recs if r.host == "node-2" and r.exitval == 255]
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
