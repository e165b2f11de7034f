"""Reliability end to end, on real sshd nodes: pegpar killed with SIGKILL and
restarted, nodes dying and coming back, unreachable hosts at start, job
timeouts, and the files pegpar keeps private."""

from __future__ import annotations

import collections
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
    rng = random.Random(int(os.environ.get("PEGPAR_TEST_SEED", "0")) or random.randrange(1 << 30))
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
        interrupted |= set(re.findall(r"job #\d+ on \S+ was interrupted.*?: echo (job-\d+-\d+)",
                                      err.read_text()))
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
    interrupted |= set(re.findall(r"job #\d+ on \S+ was interrupted.*?: echo (job-\d+-\d+)", log))
    _check_batch(tmp_path, names, ran, interrupted)
    # a job is recorded once, and a seq names one job only
    recs = records(tmp_path)
    successes = collections.Counter(r.command for r in recs if r.ok)
    assert max(successes.values()) == 1, [c for c, k in successes.items() if k > 1]
    seqs = collections.Counter(r.seq for r in recs)
    assert max(seqs.values()) == 1, [s for s, k in seqs.items() if k > 1]
