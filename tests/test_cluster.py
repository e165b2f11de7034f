"""The real-sshd test cluster (tests/cluster.py) works the way end-to-end tests rely on."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest

import cluster as cluster_lib

HERE = os.path.dirname(os.path.abspath(__file__))
PARALLEL = os.path.join(os.path.dirname(HERE), "vendor", "parallel", "parallel")
HANG_GUARD = 60


def ssh_run(config: str, *args: str, timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", config, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def short_dir():
    """A directory with a short path: a ControlPath socket name must stay under ~100 bytes."""
    d = tempfile.mkdtemp(prefix="pgcm-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_every_node_answers_with_its_own_name_and_address(cluster):
    assert cluster.nodes == ["node-1", "node-2", "node-3", "node-4"]
    for k, node in enumerate(cluster.nodes, start=1):
        rc, out = cluster.ssh(node, 'echo "$NODE $PEGPAR_TEST_NODE ${SSH_CONNECTION##* }"; echo "$SSH_CONNECTION"')
        assert rc == 0
        names, connection = out.splitlines()
        assert names == f"{node} {node} {cluster.port}"
        assert connection.split()[2] == f"127.0.0.{k + 1}"


def test_plain_ssh_with_the_config_reaches_every_node(cluster):
    for node in cluster.nodes:
        p = ssh_run(cluster.ssh_config, node, "echo $NODE")
        assert (p.returncode, p.stdout) == (0, node + "\n"), p.stderr


def test_host_keys_are_checked_against_known_hosts(cluster, tmp_path):
    config = open(cluster.ssh_config).read()
    assert "StrictHostKeyChecking yes" in config
    assert "StrictHostKeyChecking no" not in config

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    p = ssh_run(cluster.ssh_config, "-o", f"UserKnownHostsFile={empty}", "node-1", "true")
    assert p.returncode == 255
    assert "Host key verification failed" in p.stderr

    # node-1's address listed with node-2's key: a changed host key must be refused
    keys = open(cluster.known_hosts).read().splitlines()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(keys[0].split()[0] + " " + " ".join(keys[1].split()[1:]) + "\n")
    p = ssh_run(cluster.ssh_config, "-o", f"UserKnownHostsFile={wrong}", "node-1", "true")
    assert p.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in p.stderr


def test_client_files_are_private(cluster):
    for path in (cluster.ssh_config, cluster.identity, cluster.known_hosts):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def test_vendored_parallel_runs_on_two_nodes_through_a_shared_connection(cluster, pegpar_env,
                                                                         short_dir, tmp_path):
    # notes F6: parallel starts no ControlMaster for an ssh command with spaces, so the
    # wrapper, a path without spaces, asks for connection sharing itself
    wrapper = os.path.join(short_dir, "ssh")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec ssh -F {cluster.ssh_config} -o ControlMaster=auto '
                f'-o ControlPath={short_dir}/%C -o ControlPersist=30 "$@"\n')
    os.chmod(wrapper, 0o755)
    env = dict(pegpar_env, PARALLEL_HOME=str(tmp_path / "parallel-home"), PARALLEL_SHELL="/bin/sh")
    assert shutil.which("parallel", path=env["PATH"]).startswith(str(tmp_path))  # only the trap
    try:
        p = subprocess.run(["perl", PARALLEL, "--ssh", wrapper, "-S", "1/node-1,1/node-2",
                            "--nonall", "--tag", "echo $NODE"],
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=HANG_GUARD)
        assert p.returncode == 0, p.stderr
        assert sorted(p.stdout.splitlines()) == ["node-1\tnode-1", "node-2\tnode-2"]

        sockets = [n for n in os.listdir(short_dir)
                   if stat.S_ISSOCK(os.stat(os.path.join(short_dir, n)).st_mode)]
        assert len(sockets) == 2
        for node in ("node-1", "node-2"):
            check = ssh_run(cluster.ssh_config, "-o", f"ControlPath={short_dir}/%C", "-O", "check", node)
            assert check.returncode == 0, check.stderr
            assert "Master running" in check.stderr
    finally:
        for node in ("node-1", "node-2"):
            ssh_run(cluster.ssh_config, "-o", f"ControlPath={short_dir}/%C", "-O", "exit", node)


def test_the_parallel_on_path_is_a_trap(pegpar_env, tmp_path):
    p = subprocess.run(["sh", "-c", "parallel echo ::: x"], env=pegpar_env, capture_output=True,
                       text=True, timeout=HANG_GUARD)
    assert p.returncode == 127
    assert "vendored" in p.stderr
    assert "parallel echo ::: x" in (tmp_path / "trap-calls").read_text()
    (tmp_path / "trap-calls").unlink()  # run on purpose here; the fixture fails any other test


def test_a_killed_node_refuses_connections_and_drops_shared_ones(cluster, short_dir):
    cm = ["-o", "ControlMaster=auto", "-o", f"ControlPath={short_dir}/%C", "-o", "ControlPersist=30"]
    assert ssh_run(cluster.ssh_config, *cm, "node-3", "true").returncode == 0
    assert ssh_run(cluster.ssh_config, *cm, "-O", "check", "node-3").returncode == 0
    cluster.kill_node(3)
    assert not cluster.node_up(3)
    p = ssh_run(cluster.ssh_config, "-o", "ControlMaster=no", "node-3", "true")
    assert p.returncode == 255
    assert "Connection refused" in p.stderr
    # the warm master must not hide the death: it went with the node
    assert cluster.ssh("node-3", "true")[0] == 255
    assert ssh_run(cluster.ssh_config, "-o", f"ControlPath={short_dir}/%C", "-O", "check",
                   "node-3").returncode != 0
    assert cluster.ssh("node-4", "echo $NODE") == (0, "node-4\n")

    cluster.restart_node("node-3")  # same host key: known_hosts still holds
    assert cluster.ssh("node-3", "echo $NODE") == (0, "node-3\n")


def test_kill_node_ends_processes_started_on_it(cluster):
    rc, out = cluster.ssh("node-2", "sleep 300 >/dev/null 2>&1 </dev/null & echo $!")
    assert rc == 0
    pid = int(out)
    assert cluster_lib._alive(pid)
    cluster.kill_node(2)
    assert not cluster_lib._alive(pid)


def test_a_frozen_node_times_out(cluster):
    cluster.freeze_node("node-4")
    p = ssh_run(cluster.ssh_config, "-o", "ConnectTimeout=1", "node-4", "true")
    assert p.returncode == 255
    assert "timed out" in p.stderr
    cluster.thaw_node("node-4")
    assert cluster.ssh("node-4", "echo $NODE") == (0, "node-4\n")


def test_heal_brings_back_killed_and_frozen_nodes(cluster):
    cluster.kill_node(1)
    cluster.freeze_node(2)
    cluster.heal()
    assert [cluster.ssh(n, "echo $NODE")[1] for n in ("node-1", "node-2")] == ["node-1\n", "node-2\n"]


def test_two_clusters_side_by_side_do_not_collide(cluster):
    with cluster_lib.start(1) as other:
        assert other.port != cluster.port
        assert other.ssh("node-1", "echo $NODE") == (0, "node-1\n")
        assert cluster.ssh("node-1", "echo $NODE") == (0, "node-1\n")
        other_dir = other.dir
    assert not os.path.exists(other_dir)


def test_a_port_taken_after_the_check_is_retried(cluster, monkeypatch):
    # the first pick is the running cluster's port, as if another session bound it first
    picks = iter([cluster.port])
    real = cluster_lib._free_port
    monkeypatch.setattr(cluster_lib, "_free_port", lambda addresses: next(picks, None) or real(addresses))
    with cluster_lib.start(2) as other:
        assert other.port != cluster.port
        assert other.ssh("node-2", "echo $NODE") == (0, "node-2\n")
    assert cluster.ssh("node-2", "echo $NODE") == (0, "node-2\n")


def test_a_cluster_whose_owner_died_is_reaped(cluster, tmp_path):
    # the owner gets SIGKILL, as a test run killed mid-way: no teardown runs
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import cluster as c; "
            "x = c.start(1); print(x.dir, x._listener(1), flush=True); sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", code, HERE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        stale_dir, sshd_pid = owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=HANG_GUARD)
    assert cluster_lib._alive(int(sshd_pid))

    cluster_lib.reap_stale(cluster_lib.runtime_root())  # (a parallel session's start may beat us)
    assert not cluster_lib._alive(int(sshd_pid))
    assert not os.path.exists(stale_dir)
    assert cluster.dir not in cluster_lib.reap_stale(cluster_lib.runtime_root())  # ours lives


def test_command_line_start_and_stop(sshd, tmp_path):
    cluster_lib_path = os.path.join(HERE, "cluster.py")
    d = str(tmp_path / "by-hand")
    p = subprocess.run([sys.executable, cluster_lib_path, "start", "2", d], capture_output=True,
                       text=True, timeout=HANG_GUARD)
    try:
        assert p.returncode == 0, p.stderr
        config = os.path.join(d, "ssh_config")
        assert f"ssh -F {config} node-2 'echo $NODE'" in p.stdout
        assert ssh_run(config, "node-2", "echo $NODE").stdout == "node-2\n"
        pid = cluster_lib.Cluster.load(d)._listener(2)
    finally:
        q = subprocess.run([sys.executable, cluster_lib_path, "stop", d], capture_output=True,
                           text=True, timeout=HANG_GUARD)
    assert q.returncode == 0, q.stderr
    assert not os.path.exists(d)
    assert not cluster_lib._alive(pid)
    assert cluster_lib.main(["stop", d]) == 1
    assert cluster_lib.main(["frobnicate"]) == 2


def test_start_refuses_a_directory_that_holds_something_else(sshd, tmp_path):
    (tmp_path / "precious").write_text("keep me")
    with pytest.raises(RuntimeError, match="not empty"):
        cluster_lib.start(1, str(tmp_path))
    assert (tmp_path / "precious").read_text() == "keep me"
