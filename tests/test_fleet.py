"""A fleet larger than the other tests': 64 sub-nodes on 16 real sshd nodes."""

from __future__ import annotations

import collections
from typing import Iterator

import pytest

import cluster as cluster_lib
from runner import cluster_hosts, pegpar, records, write_queue

HOSTS, SUBS, JOBS = 16, 4, 200


@pytest.fixture(scope="module")
def fleet(sshd) -> Iterator[cluster_lib.Cluster]:
    with cluster_lib.start(HOSTS) as c:  # stopped after the module's tests
        yield c


def test_sixty_four_sub_nodes_run_every_job_exactly_once(tmp_path, fleet, pegpar_env):
    """All hosts checked at once at start, none marked down; 200 jobs, each
    recorded once, run once, spread over every sub-node's host."""
    cluster_hosts(tmp_path, f"- hostname: [{', '.join(fleet.nodes)}]\n  slot: {list(range(1, SUBS + 1))}\n")
    done = tmp_path / "done"
    write_queue(tmp_path, f"- command: ['echo {{{{i}}}} $NODE >> {done}; sleep 0.1']\n  i: {list(range(JOBS))}\n")
    r = pegpar(["q", "--no-progress", "--ssh-config", fleet.ssh_config], tmp_path, pegpar_env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "down" not in r.stderr and "left out" not in r.stderr, r.stderr
    recs = records(tmp_path)
    assert len(recs) == JOBS and all(rec.ok for rec in recs)
    assert sorted(rec.command.split()[1] for rec in recs) == sorted(str(i) for i in range(JOBS))
    ran = collections.Counter(line.split()[0] for line in done.read_text().splitlines())
    assert sorted(ran) == sorted(str(i) for i in range(JOBS)) and set(ran.values()) == {1}
    assert {line.split()[1] for line in done.read_text().splitlines()} == set(fleet.nodes)
    assert len({rec.host for rec in recs}) > HOSTS  # sub-nodes, not only hosts, took jobs
