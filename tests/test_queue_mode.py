"""Queue mode end to end: `pegpar q` on real sshd nodes through the vendored GNU parallel."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from runner import (children, cluster_hosts, load_yaml, overlapping, pegpar, records, start, wait_for,
                    write_queue)

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


def q(tmp_path, cluster, env, *extra, input=None):
    return pegpar(["q", "--ssh-config", cluster.ssh_config, *extra], tmp_path, env, input=input)


def test_seed_example_places_each_job_on_its_own_sub_node(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1, node-2]\n  container: [gpu0, gpu1]\n")
    write_queue(tmp_path, "- command:\n    - echo $NODE {{ container }} {{ bs }}; sleep 1\n"
                          "  bs: [8, 16, 32, 64]\n")
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert len(recs) == 4
    assert len({rec.host for rec in recs}) == 4  # four distinct sub-nodes
    assert all(overlapping(a, b) for a in recs for b in recs)  # all four at once
    for line in r.stdout.splitlines():
        # "[node-1 (container=gpu0)] node-1 gpu0 8"
        prefix, _, text = line.partition("] ")
        host, _, params = prefix[1:].partition(" (container=")
        node, container, bs = text.split()
        assert node == host and container == params.rstrip(")")
    assert sorted(int(line.split()[-1]) for line in r.stdout.splitlines()) == [8, 16, 32, 64]
    consumed = load_yaml(tmp_path / "consumed.yaml")
    assert consumed == [{"command": ["echo $NODE {{ container }} {{ bs }}; sleep 1"], "bs": [b]}
                        for b in (8, 16, 32, 64)]
    assert load_yaml(tmp_path / "queue.yaml") in (None, [])
    # pasted back, the consumed entries run the same jobs again
    shutil.copy(tmp_path / "consumed.yaml", tmp_path / "queue.yaml")
    os.unlink(tmp_path / "consumed.yaml")
    r2 = q(tmp_path, cluster, pegpar_env)
    assert r2.returncode == 0, r2.stderr
    assert sorted(int(x.split()[-1]) for x in r2.stdout.splitlines()) == [8, 16, 32, 64]


def test_one_job_per_sub_node_and_all_run_once(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    write_queue(tmp_path, "".join(f"- sleep 1; echo job-{i}\n" for i in range(12)))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert sorted(rec.command for rec in recs) == sorted(f"sleep 1; echo job-{i}" for i in range(12))
    for a in recs:
        for b in recs:
            if a is not b and a.host == b.host:
                assert not overlapping(a, b), (a, b)
    # at some moment three jobs ran together
    assert any(sum(overlapping(a, b) for b in recs) == 3 for a in recs)
    assert sorted(line.split()[-1] for line in r.stdout.splitlines()) == sorted(f"job-{i}" for i in range(12))


def test_entries_added_while_running_are_run_and_deleted_ones_are_not(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, "- sleep 2; echo first\n- echo doomed\n")
    p = start(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    try:
        wait_for(lambda: "doomed" in (tmp_path / "queue.yaml").read_text()
                 and "first" not in (tmp_path / "queue.yaml").read_text(), what="first job taken")
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\necho '- echo added' > \"$1\"\n")
        editor.chmod(0o700)
        subprocess.run([os.sys.executable, "-m", "pegpar", "l", "--editor", str(editor)], cwd=tmp_path,
                       env=pegpar_env, stdin=subprocess.DEVNULL, check=True, timeout=30)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "added" in out and "doomed" not in out
    assert [rec.command for rec in records(tmp_path)] == ["sleep 2; echo first", "echo added"]


EXACT = "printf '%s|' \"it's\" '\"q\"' \"$HOME\" `echo bt` 'back\\slash' '100%' a@b '{}' 'é ü 日本'\necho line2"


def test_commands_reach_the_node_exactly(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-2\n")
    write_queue(tmp_path, "- |\n" + "".join(f"  {line}\n" for line in EXACT.splitlines()))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    code, expected = cluster.ssh("node-2", "sh -c " + _sq(EXACT))
    assert code == 0
    assert r.stdout == "".join(f"[node-2] {line}\n" for line in expected.splitlines())
    assert "$HOME" not in r.stdout and "/" in r.stdout  # expanded on the node


def _sq(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_a_failing_job_makes_exit_code_1_and_is_in_the_summary(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, "- echo fine\n- exit 7\n- echo also fine\n")
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 1
    assert "3 job(s) run, 1 failed" in r.stderr
    failed = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "exit 7" in failed[0] and "exit 7" in failed[0].split(": ", 1)[1]
    assert sorted(rec.exitval for rec in records(tmp_path)) == [0, 0, 7]


def test_stdin_commands_write_no_queue_file(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    cmds = "".join(f"echo {i}\n" for i in range(1, 21))
    r = q(tmp_path, cluster, pegpar_env, input=cmds)
    assert r.returncode == 0, r.stderr
    assert sorted(int(x.split()[-1]) for x in r.stdout.splitlines()) == list(range(1, 21))
    assert not (tmp_path / "queue.yaml").exists() and not (tmp_path / "consumed.yaml").exists()


def test_stdin_lines_as_arguments_like_xargs(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    r = q(tmp_path, cluster, pegpar_env, "--", "echo", "X", input="a b\nc\n")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["X a b", "X c"]
    # as GNU parallel: no summary when all went well; where the jobs run is said
    assert r.stderr == "pegpar: jobs run on the sub-nodes of hosts.yaml (-S names others)\n"
    r = q(tmp_path, cluster, pegpar_env, "--", "echo", "{{", "line", "}}", "Y", input="it's\n")
    assert r.stdout == "it's Y\n"


def test_a_template_that_does_not_parse_ends_the_input_where_it_is(tmp_path, pegpar_env):
    """Input is run as it comes: the lines before the bad one run, it and
    those after it do not, exit 2 naming it."""
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env,
               input="echo one >> ran\necho two >> ran\necho {{#if}}\necho four >> ran\n", timeout=60)
    assert r.returncode == 2, r.stderr
    # the reading stopped at that line: what follows it was never read, nor counted
    assert "pegpar: <stdin>:3: template: `{{#if}}` is not closed by `{{/if}}`; not run: this line and the " \
        "input after it\n" in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text() == "one\ntwo\n"


def test_a_command_after_double_dash_that_does_not_parse_runs_nothing(tmp_path, pegpar_env):
    r = pegpar(["q", "--", "echo {{#if}} >> ran"], tmp_path, pegpar_env, input="a\nb\n", timeout=60)
    assert r.returncode == 2 and r.stderr == "pegpar: <stdin>:1: template: `{{#if}}` is not closed by `{{/if}}`\n"
    assert not (tmp_path / "ran").exists()


def test_an_input_line_that_cannot_render_ends_the_run_with_exit_2(tmp_path, pegpar_env):
    """Nothing can fix the input later: the lines before it run, it and those
    after it do not, and the run ends (it used to wait for a fix forever)."""
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env,
               input="echo one >> ran\necho two >> ran\necho {{nope}}\necho four >> ran\n", timeout=60)
    assert r.returncode == 2, r.stderr
    assert "pegpar: <stdin>:3: template: unknown variable `nope` (defined here: allocation_policy, hostname, " \
        "slots); not run: this line and the 1 after it\n" in r.stderr, r.stderr
    assert (tmp_path / "ran").read_text() == "one\ntwo\n"


def _job_processes(cluster, marker: str) -> str:
    """Processes whose command line matches `marker` (a grep pattern), as each
    node sees them (the nodes share this machine: every process here is seen)."""
    found = ""
    for node in ("node-1", "node-2", "node-3"):
        code, out = cluster.ssh(node, f"ps -eo args | grep -v grep | grep -e {shlex.quote(marker)} || true")
        found += out
    return found


def test_first_ctrl_c_finishes_running_jobs_and_keeps_the_queue(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    queue = "- sleep 2; echo done-a\n- sleep 2; echo done-b\n- echo never-1\n- echo never-2\n"
    write_queue(tmp_path, queue)
    p = start(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    wait_for(lambda: (tmp_path / "queue.yaml").read_text() == "- echo never-1\n- echo never-2\n",
             what="two jobs taken")
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sorted(out.split()[1::2]) == ["done-a", "done-b"]
    assert (tmp_path / "queue.yaml").read_text() == "- echo never-1\n- echo never-2\n"
    assert sorted(rec.command for rec in records(tmp_path)) == ["sleep 2; echo done-a", "sleep 2; echo done-b"]


def test_second_ctrl_c_kills_jobs_on_the_nodes(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    write_queue(tmp_path, "".join(f"- sleep 300{i} & sleep 400{i}; echo never\n" for i in range(3)))
    p = start(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    wait_for(lambda: all(f"sleep 400{i}" in _job_processes(cluster, f"400{i}") for i in range(3)),
             what="jobs running on the nodes")
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    killed_at = time.time()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    wait_for(lambda: _job_processes(cluster, "^sleep [34]00[0-2]$") == "", timeout=5 - (time.time() - killed_at) + 1,
             what="no job process left on any node")
    recs = records(tmp_path)
    assert len(recs) == 3 and all(not rec.ok for rec in recs)
    assert "never" not in out


def test_no_hosts_file_runs_the_bundled_example_locally(tmp_path, pegpar_env):
    shutil.copytree(os.path.join(EXAMPLES, "local"), tmp_path / "ex")
    (tmp_path / "ex" / "queue.yaml").chmod(0o600)
    expected = load_yaml(tmp_path / "ex" / "queue.yaml")
    r = pegpar(["q"], tmp_path / "ex", pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path / "ex")
    assert recs and all(rec.host.startswith("localhost/") for rec in recs)
    assert all(line.startswith("[localhost/") for line in r.stdout.splitlines())
    assert expected and load_yaml(tmp_path / "ex" / "queue.yaml") in (None, [])


def test_a_host_with_forty_sub_nodes_runs_every_job_on_shared_connections(tmp_path, cluster, pegpar_env):
    """40 sub-nodes on one host use 5 shared connections (8 sessions each):
    all are up before jobs start, so 40 jobs starting together never race to
    create them (the losers would open connections of their own, which sshd
    drops past its MaxStartups)."""
    slots = list(range(1, 41))
    cluster_hosts(tmp_path, f"- hostname: [node-1]\n  slot: {slots}\n")
    write_queue(tmp_path, f"- command: ['echo {{{{i}}}} {{{{slot}}}} $NODE; sleep 2']\n  i: {list(range(40))}\n")
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "multiplexing" not in r.stderr, r.stderr
    recs = records(tmp_path)
    assert len(recs) == 40 and all(rec.ok for rec in recs)
    got = sorted(tuple(line.partition("] ")[2].split()) for line in r.stdout.splitlines())
    assert [g[0] for g in got] == sorted(str(i) for i in range(40))
    assert {g[2] for g in got} == {"node-1"}
    # each job printed the slot of the sub-node it ran on
    for line in r.stdout.splitlines():
        prefix, _, text = line.partition("] ")
        assert prefix == f"[node-1 (slot={text.split()[1]})", line
    assert len({line.partition("] ")[0] for line in r.stdout.splitlines()}) == 40  # one job each


def test_hosts_written_as_ssh_urls_run_jobs(tmp_path, cluster, pegpar_env):
    """`ssh://user@host:port` and `ssh://host:port` (Pegasus's forms) reach
    their node, in a run that shares each host's connection."""
    config = tmp_path / "ssh_config"
    config.write_text("".join([
        "Host 127.0.0.*\n",
        f"  User {cluster.user}\n",
        f"  IdentityFile {cluster.identity}\n",
        "  IdentitiesOnly yes\n  IdentityAgent none\n",
        f"  UserKnownHostsFile {cluster.known_hosts}\n",
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n"]))
    one = f"ssh://{cluster.user}@{cluster.address('node-1')}:{cluster.port}"
    two = f"ssh://{cluster.address('node-2')}:{cluster.port}"
    cluster_hosts(tmp_path, f"- hostname: ['{one}', '{two}']\n  slot: [a, b]\n")
    write_queue(tmp_path, "- command: ['echo {{i}} $NODE; sleep 0.5']\n  i: [0, 1, 2, 3, 4, 5, 6, 7]\n")
    r = pegpar(["q", "--ssh-config", str(config)], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert len(recs) == 8 and all(rec.ok for rec in recs)
    for line in r.stdout.splitlines():
        prefix, _, text = line.partition("] ")
        expected = "node-1" if prefix.startswith(f"[{one} ") else "node-2"
        assert prefix.startswith((f"[{one} ", f"[{two} ")) and text.split()[1] == expected, line
    assert len({line.partition("] ")[0] for line in r.stdout.splitlines()}) == 4


def test_jobs_that_render_on_some_sub_nodes_only_wait_for_them_without_an_error(tmp_path, pegpar_env):
    """Sub-nodes given a job earlier in the same turn are busy, not down: the
    next job waits for them and no error is printed."""
    cluster_hosts(tmp_path, '- hostname: [localhost]\n  gpu: ["0", "1"]\n- 127.0.0.1\n')
    write_queue(tmp_path, "- command: ['sleep 0.3; echo gpu={{gpu}} job={{i}}']\n  i: [1, 2, 3, 4, 5, 6]\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr and "down" not in r.stderr, r.stderr
    assert sorted(line.split("] ", 1)[1].split()[1] for line in r.stdout.splitlines()) == \
        [f"job={i}" for i in range(1, 7)]
    assert {rec.host for rec in records(tmp_path)} == {"localhost (gpu=0)", "localhost (gpu=1)"}


def test_a_retry_still_waiting_when_the_run_is_stopped_is_not_lost(tmp_path, bg):
    """The failed job's sub-node took the next job before its record said it
    failed: its retry waits for a sub-node when Ctrl-C comes. The run counts
    the failure (exit 1) and the job goes back to the top of queue.yaml."""
    write_queue(tmp_path, "- sleep 0.5; exit 3\n- sleep 4; echo long\n- sleep 4; echo long2\n- echo later\n")
    ctl = bg("q", "-j", "2", "--retries", "1", "--no-progress")
    wait_for(lambda: "retrying (1/1)" in ctl.stderr(), 30, what="the retry")
    ctl.p.send_signal(signal.SIGINT)
    assert ctl.wait() == 1, ctl.stderr()
    assert "1 failed" in ctl.stderr() and "FAILED #1 on localhost" in ctl.stderr(), ctl.stderr()
    assert "1 job(s) waiting to run again put back at the top of queue.yaml: #1" in ctl.stderr(), ctl.stderr()
    assert load_yaml(tmp_path / "queue.yaml") == ["sleep 0.5; exit 3", "echo later"]


def test_input_lines_left_when_the_run_is_stopped_are_counted(tmp_path, pegpar_env):
    (tmp_path / "cmds").write_text("".join(f"sleep 1; echo line-{i}\n" for i in range(6)))
    with open(tmp_path / "cmds") as cmds:
        p = subprocess.Popen([sys.executable, "-m", "pegpar", "q", "-j", "2", "--no-progress"], cwd=tmp_path,
                             env=pegpar_env, stdin=cmds, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    ran = len(out.splitlines())
    assert p.returncode == 1 and ran < 6, (out, err)
    assert f"{6 - ran} input line(s) read and not run (pegpar stopped first)" in err, err


def test_a_fresh_joblog_does_not_reuse_the_id_of_a_job_killed_before(tmp_path, pegpar_env):
    """A killed job's mark stays on its node; a later run counting seqs in a new
    joblog must not give a new job that job's id (it would exit 143 unrun)."""
    write_queue(tmp_path, "- sleep 30\n")
    r = pegpar(["q", "-j", "1", "--no-progress", "--timeout", "1"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 1 and "timed out" in r.stderr, r.stderr
    write_queue(tmp_path, "- echo ok >> ran\n")
    r = pegpar(["q", "-j", "1", "--no-progress", "--joblog", "new.log"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran").read_text() == "ok\n"
    shutil.rmtree(tmp_path / ".pegpar")  # pegpar's state gone too: the ids still do not come back
    write_queue(tmp_path, "- echo again >> ran\n")
    r = pegpar(["q", "-j", "1", "--no-progress"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran").read_text() == "ok\nagain\n"


def _parallels(pid: int):
    """The GNU parallels that pegpar `pid` runs: the fork server's children."""
    servers = [kid for kid, argv in children(pid) if b"-MPegparForkServer" in argv]
    assert len(servers) <= 1
    return [kid for server in servers for kid, _ in children(server)]


def test_a_host_with_an_open_wave_keeps_no_idle_parallel_and_gets_one_when_it_closes(tmp_path, bg, pegpar_env):
    """One GNU parallel per host while its jobs run (the open wave takes the
    next ones); once the wave closes, one ready parallel waits for the next
    job, so a job added later starts without paying parallel's start-up."""
    write_queue(tmp_path, "- sleep 3\n- sleep 3\n")
    ctl = bg("q", "--daemon", "-j", "2", "--no-progress")
    wait_for(lambda: (tmp_path / "queue.yaml").read_text() == "", timeout=30, what="both jobs taken")
    time.sleep(1.0)  # a ready parallel would have been started by now
    assert len(_parallels(ctl.pid)) == 1
    wait_for(lambda: len(records(tmp_path)) == 2, timeout=30, what="both jobs recorded")
    wait_for(lambda: len(_parallels(ctl.pid)) == 1, timeout=30, what="the ready parallel alone")
    r = pegpar(["stop"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert ctl.wait(30) == 0, ctl.stderr()
