"""Broadcast mode end to end: `pegpar b` runs each step on every sub-node, in step."""

from __future__ import annotations

from runner import cluster_hosts, load_yaml, pegpar, records, write_queue


def b(tmp_path, cluster, env, *extra):
    return pegpar(["b", "--ssh-config", cluster.ssh_config, *extra], tmp_path, env)


def test_steps_never_run_ahead_of_a_slow_node(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    slow = 'if [ "$NODE" = node-1 ]; then sleep 1.5; fi; echo step'
    write_queue(tmp_path, "".join(f"- {slow}{i}\n" for i in (1, 2, 3)))
    r = b(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert len(recs) == 9
    steps = {i: [rec for rec in recs if rec.command.endswith(f"step{i}")] for i in (1, 2, 3)}
    for i in (1, 2):
        ended = max(rec.start + rec.runtime for rec in steps[i])
        started = min(rec.start for rec in steps[i + 1])
        assert started >= ended - 0.002, f"step {i + 1} started before step {i} ended everywhere"
    assert {rec.host for rec in steps[2]} == {"node-1", "node-2", "node-3"}
    assert "step 1: ok on 3/3" in r.stderr and "step 3: ok on 3/3" in r.stderr


FAILING_QUEUE = ('- echo one\n- \'if [ "$NODE" = node-2 ]; then exit 3; fi; echo two\'\n'
                 '- echo three\n- echo four\n')


def test_a_failed_step_stops_the_run_and_keeps_the_rest_of_the_queue(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    write_queue(tmp_path, FAILING_QUEUE)
    r = b(tmp_path, cluster, pegpar_env)
    assert r.returncode == 1
    assert "step 2: FAILED on node-2 (exit 3)" in r.stderr
    assert load_yaml(tmp_path / "queue.yaml") == ["echo three", "echo four"]
    assert len(records(tmp_path)) == 6  # step 2 finished everywhere, nothing after it
    assert "three" not in r.stdout


def test_ignore_errors_runs_every_step_and_still_exits_1(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    write_queue(tmp_path, FAILING_QUEUE)
    r = b(tmp_path, cluster, pegpar_env, "-i")
    assert r.returncode == 1
    assert len(records(tmp_path)) == 12
    assert "step 4: ok on 3/3" in r.stderr
    assert load_yaml(tmp_path / "queue.yaml") in (None, [])


def test_sub_node_parameters_render_per_sub_node(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1, node-2]\n  container: [a, b]\n")
    write_queue(tmp_path, "- echo $NODE {{ container }}\n")
    r = b(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(
        f"[{n} (container={c})] {n} {c}" for n in ("node-1", "node-2") for c in ("a", "b"))


def test_per_node_output_is_under_the_right_prefix(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n- node-4\n")
    write_queue(tmp_path, "- 'echo hello from $NODE; echo bye from $NODE'\n")
    r = b(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8
    for line in lines:
        prefix, _, text = line.partition("] ")
        assert text.split()[-1] == prefix[1:]


def test_unreachable_node_is_a_failure_of_the_step_not_a_hang(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, "- echo one\n- echo two\n")
    cluster.kill_node("node-2")
    r = b(tmp_path, cluster, pegpar_env)
    assert r.returncode == 1
    assert "step 1: FAILED on node-2 (exit 255)" in r.stderr
    assert load_yaml(tmp_path / "queue.yaml") == ["echo two"]
