"""Control and observability end to end, on the real-sshd cluster: `pegpar
status`, `stop`, `stop --kill`, `kill`, `log`, `logs`, `retry` and the one-
controller-per-queue rule, against a running `pegpar q`."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import List

import pytest

from pegpar import joblog

from runner import cluster_hosts, commands, dispatched, journal, load_yaml, pegpar, records, wait_for, write_queue

THREE = "- node-1\n- node-2\n- node-3\n"
SIX = [f"sleep 3; echo job-{i}" for i in range(6)]
NODES = ["node-1", "node-2", "node-3"]


def queue_text(cmds: List[str]) -> str:
    return "".join(f"- {c}\n" for c in cmds)


def cli(folder, env, *args: str, code: int = 0) -> str:
    r = pegpar(list(args), folder, env)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def status_json(folder, env) -> dict:
    return json.loads(cli(folder, env, "status", "--json"))


def running_now(folder) -> List[dict]:
    """Dispatches of the live run that have no result yet, per the journal."""
    done = {r["seq"] for r in journal(folder) if r.get("event") == "done"}
    return [r for r in dispatched(folder) if r["seq"] not in done]


# The nodes are sshd's on this machine, where other test runs may sleep too: this
# run's long jobs sleep for durations of their own.
TOKEN = f"{random.randrange(10 ** 6):06d}"


def long_sleep(name: object = "") -> str:
    """A long `sleep` named `name`; without a name, the text every one starts with."""
    return f"sleep 600.{TOKEN}{name}"


def job_processes(cluster, text: str, nodes: List[str] = NODES) -> str:
    """Processes whose command line contains `text`, on the nodes, over ssh."""
    found = ""
    for node in nodes:
        code, out = cluster.ssh(node, f"ps -eo pid,args | grep -v grep | grep -F -e '{text}' || true")
        assert code == 0
        found += out
    return found


def test_status_shows_running_and_queued_jobs_then_the_result(tmp_path, cluster, bg, pegpar_env):
    cluster_hosts(tmp_path, THREE)
    write_queue(tmp_path, queue_text(SIX))
    ctl = bg("q", "--ssh-config", cluster.ssh_config)
    seen = {}

    def three_and_three() -> bool:
        seen.update(status_json(tmp_path, pegpar_env))
        return seen["running"] == 3 and seen["queued"] == 3

    wait_for(three_and_three, what="3 running and 3 queued in `pegpar status --json`")
    assert seen["controller"]["pid"] == ctl.pid
    assert sorted(j["node"] for j in seen["jobs_running"]) == NODES
    assert sorted(j["command"] for j in seen["jobs_running"]) == SIX[:3]
    assert sorted(n["state"] for n in seen["nodes"]) == ["running"] * 3
    assert ctl.wait() == 0, ctl.stderr()
    after = status_json(tmp_path, pegpar_env)
    assert after["controller"] is None
    assert (after["done"], after["failed"], after["queued"], after["consumed"]) == (6, 0, 0, 6)
    text = cli(tmp_path, pegpar_env, "status")
    assert "no pegpar running" in text and "done 6" in text


def test_stop_lets_running_jobs_finish_and_keeps_the_rest_queued(tmp_path, cluster, bg, pegpar_env):
    cluster_hosts(tmp_path, THREE)
    write_queue(tmp_path, queue_text(SIX))
    ctl = bg("q", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: len(running_now(tmp_path)) == 3, what="3 jobs running")
    assert f"(pid {ctl.pid})" in cli(tmp_path, pegpar_env, "stop")
    assert ctl.wait() == 0, ctl.stderr()
    recs = records(tmp_path)
    assert sorted(r.command for r in recs) == SIX[:3] and all(r.ok for r in recs)
    assert sorted(r.host for r in recs) == NODES
    assert sorted(line.split()[-1] for line in ctl.stdout().splitlines()) == ["job-0", "job-1", "job-2"]
    assert (tmp_path / "queue.yaml").read_text() == queue_text(SIX[3:])
    assert load_yaml(tmp_path / "consumed.yaml") == SIX[:3]


def test_stop_kill_leaves_no_job_process_on_any_node(tmp_path, cluster, bg, pegpar_env):
    cluster_hosts(tmp_path, THREE)
    # each job leaves a child in the background: killing the job's shell is not enough
    jobs = [f"{long_sleep(i * 10 + 1)} & {long_sleep(i * 10 + 2)}; echo never" for i in range(3)]
    rest = queue_text(["echo stays-1", "echo stays-2"])
    write_queue(tmp_path, queue_text(jobs) + rest)
    ctl = bg("q", "--ssh-config", cluster.ssh_config)
    pattern = long_sleep()
    wait_for(lambda: len(job_processes(cluster, pattern).splitlines()) >= 6, what="the jobs and their children")
    cli(tmp_path, pegpar_env, "stop", "--kill")
    asked = time.time()
    wait_for(lambda: job_processes(cluster, pattern) == "", timeout=max(0.5, asked + 5 - time.time()),
             what="no process of any job left on any node within 5 s")
    assert ctl.wait() == 1, ctl.stderr()
    recs = records(tmp_path)
    assert sorted(r.command for r in recs) == jobs
    assert all(not r.ok for r in recs)  # recorded as killed
    assert "never" not in ctl.stdout()
    assert (tmp_path / "queue.yaml").read_text() == rest
    assert "3 killed" in ctl.stderr()


def test_one_controller_per_queue_and_a_killed_one_is_no_obstacle(tmp_path, cluster, bg, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    first = bg("q", "--daemon", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: (status_json(tmp_path, pegpar_env)["controller"] or {}).get("pid") == first.pid,
             what="the first controller running")
    # the refused one comes without the ssh config: it must change nothing of the running one's
    second = pegpar(["q", "--daemon"], tmp_path, pegpar_env)
    assert second.returncode == 2
    assert len(second.stderr.splitlines()) == 1 and f"pid {first.pid}" in second.stderr, second.stderr
    cli(tmp_path, pegpar_env, "add", "echo served")
    wait_for(lambda: commands(tmp_path) == ["echo served"], what="the first controller still serving")
    assert records(tmp_path)[0].ok, first.stderr()

    os.kill(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    write_queue(tmp_path, "- echo third\n")
    third = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert third.returncode == 0, third.stderr
    assert third.stdout == "[node-1] third\n"


def test_log_failed_and_retry_rerun_only_the_failed_jobs(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, "- echo ok-1\n- exit 3\n- echo ok-2\n"
                          "- command: ['echo p{{ k }}; test {{ k }} != 2']\n  k: [1, 2, 3]\n")
    failing = ["echo p2; test 2 != 2", "exit 3"]
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    assert len(records(tmp_path)) == 6
    rows = json.loads(cli(tmp_path, pegpar_env, "log", "--failed", "--json"))
    assert sorted(row["command"] for row in rows) == failing
    assert sorted(row["exitval"] for row in rows) == [1, 3] and {row["state"] for row in rows} == {"failed"}

    said = cli(tmp_path, pegpar_env, "retry", "--failed")
    assert "2 failed job(s)" in said
    assert load_yaml(tmp_path / "queue.yaml") == ["exit 3", {"command": ["echo p{{ k }}; test {{ k }} != 2"],
                                                             "k": [2]}]
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    again = records(tmp_path)[6:]
    assert sorted(rec.command for rec in again) == failing
    rows = json.loads(cli(tmp_path, pegpar_env, "log", "--failed", "--last", "--json"))
    assert sorted(row["seq"] for row in rows) == sorted(rec.seq for rec in again)


def test_logs_prints_a_finished_jobs_output(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-2\n")
    write_queue(tmp_path, "- 'echo out-1; echo err-1 >&2; echo out-2'\n- echo other\n")
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    seq = next(rec.seq for rec in records(tmp_path) if "out-1" in rec.command)
    assert cli(tmp_path, pegpar_env, "logs", str(seq)) == "out-1\nout-2\nerr-1\n"
    assert cli(tmp_path, pegpar_env, "logs", "--stderr", str(seq)) == "err-1\n"
    assert cli(tmp_path, pegpar_env, "logs", str(seq + 1 if seq == 1 else 1)) == "other\n"


def test_kill_one_job_and_the_controller_carries_on(tmp_path, cluster, bg, pegpar_env):
    cluster_hosts(tmp_path, THREE)
    jobs = [f"{long_sleep(11)} & {long_sleep(12)}; echo never-a", f"{long_sleep(21)}; echo never-b"]
    write_queue(tmp_path, queue_text(jobs))
    ctl = bg("q", "--daemon", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: len(running_now(tmp_path)) == 2, what="both jobs dispatched")
    where = {d["command"]: (d["seq"], d["host"]) for d in dispatched(tmp_path)}
    (a, a_node), (b, b_node) = where[jobs[0]], where[jobs[1]]
    wait_for(lambda: len(job_processes(cluster, long_sleep(), [a_node, b_node]).splitlines()) >= 3,
             what="both jobs running on their nodes")

    assert f"job #{a}" in cli(tmp_path, pegpar_env, "kill", "--job", str(a))
    wait_for(lambda: [r.seq for r in records(tmp_path)] == [a], what=f"job #{a} recorded")
    wait_for(lambda: job_processes(cluster, long_sleep(1), [a_node]) == "", what=f"job #{a} gone from its node")
    assert long_sleep(21) in job_processes(cluster, long_sleep(21), [b_node])  # the other job runs on
    assert [r["seq"] for r in running_now(tmp_path)] == [b]
    cli(tmp_path, pegpar_env, "add", "echo after")
    wait_for(lambda: "echo after" in commands(tmp_path), what="a new entry run after the kill")

    assert f"job #{b}" in cli(tmp_path, pegpar_env, "kill", str(b))
    wait_for(lambda: len(records(tmp_path)) == 3, what=f"job #{b} recorded")
    wait_for(lambda: job_processes(cluster, long_sleep(2), [b_node]) == "", what=f"job #{b} gone from its node")
    cli(tmp_path, pegpar_env, "stop")
    assert ctl.wait() == 1, ctl.stderr()  # the killed jobs count as failed
    recs = {r.command: r for r in records(tmp_path)}
    assert not recs[jobs[0]].ok and not recs[jobs[1]].ok and recs["echo after"].ok
    assert "never" not in ctl.stdout()


def test_a_long_runs_journal_stays_bounded_and_its_readers_agree(tmp_path, pegpar_env):
    # 600 jobs of 4 KB commands journal about 5 MB: past the journal's bound
    # (state.COMPACT_AT, 4 MB), so the run compacts it on the way
    failing = {7, 300, 555}
    pad = "x" * 4000
    write_queue(tmp_path, "- command: [': {{ pad }}; test {{ i }} -ne 7 -a {{ i }} -ne 300 -a {{ i }} -ne 555']\n"
                          f"  pad: [{pad}]\n  i: [{', '.join(map(str, range(600)))}]\n")
    r = pegpar(["q", "-j", "8", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    assert len(records(tmp_path)) == 600
    assert os.path.getsize(tmp_path / ".pegpar" / "journal") < 4 << 20
    assert len(dispatched(tmp_path)) < 600  # compacted: the successes left as seq ranges

    data = status_json(tmp_path, pegpar_env)
    assert (data["done"], data["failed"], data["interrupted"]) == (597, 3, 0)
    assert len(json.loads(cli(tmp_path, pegpar_env, "log", "--last", "--json"))) == 600
    rows = json.loads(cli(tmp_path, pegpar_env, "log", "--failed", "--last", "--json"))
    assert sorted(int(row["command"].split("; test ")[1].split()[0]) for row in rows) == sorted(failing)
    assert "3 failed job(s)" in cli(tmp_path, pegpar_env, "retry", "--failed")
    assert sorted(entry["i"][0] for entry in load_yaml(tmp_path / "queue.yaml")) == sorted(failing)


@pytest.mark.parametrize("hosts", ["- hostname: [localhost]\n  gpu: [0, 1]\n- 127.0.0.1\n",
                                   "- 127.0.0.1\n- hostname: [localhost]\n  gpu: [0, 1]\n"],
                         ids=["gpus-first", "gpus-last"])
def test_a_job_that_renders_on_some_sub_nodes_only_waits_for_one_of_them(tmp_path, pegpar_env, hosts):
    """`{{gpu}}` exists on the two gpu sub-nodes only: its jobs run there, one
    after another, and the sub-node without a gpu takes the entry after them;
    nothing stalls, whatever the order of the hosts."""
    cluster_hosts(tmp_path, hosts)
    write_queue(tmp_path, "- command: ['sleep 0.3; echo gpu={{gpu}}']\n  i: [1, 2, 3, 4]\n- echo plain\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 5, r.stdout
    gpu_lines = [line for line in lines if "gpu=" in line.partition("] ")[2]]
    assert len(gpu_lines) == 4 and all(line.startswith("[localhost (gpu=") for line in gpu_lines), lines
    assert all(line.partition("] ")[2] == f"gpu={line[len('[localhost (gpu='):][0]}" for line in gpu_lines)
    assert load_yaml(tmp_path / "queue.yaml") in (None, [])


def test_a_job_no_sub_node_renders_stops_the_queue_and_the_run_ends_with_exit_2(tmp_path, pegpar_env, bg):
    """After a job ran, a head entry that renders on no sub-node stops the
    queue (the file untouched); without --daemon no fix is waited for once
    nothing runs: pegpar says so and exits 2, not 0, and never waits forever."""
    write_queue(tmp_path, "- sleep 1; echo first\n")
    child = bg("q", "--no-progress", "-j", "2")
    wait_for(lambda: (tmp_path / "queue.yaml").read_text() == "", timeout=30, what="the first job taken")
    write_queue(tmp_path, "- echo {{ nope }}\n")  # an edit during the run (the start checks the whole queue)
    wait_for(lambda: "unknown variable" in child.stderr(), timeout=30)
    assert "no new job until it is fixed" in child.stderr()
    assert child.wait(30) == 2, child.stderr()
    assert (tmp_path / "queue.yaml").read_text() == "- echo {{ nope }}\n"
    assert "the queue still has an error" in child.stderr() and child.stdout() == "[localhost/1] first\n"


def test_a_bad_entry_behind_a_good_one_never_hangs(tmp_path, pegpar_env):
    """The issue's case: `- echo ok`, then an entry with a nested list, no
    terminal, no --daemon: pegpar exits 2 at once naming the bad entry,
    nothing run, the file as the user left it."""
    text = "- echo ok\n- command: [x]\n  lr: [[1, 2]]\n"
    write_queue(tmp_path, text)
    r = pegpar(["q", "--no-progress", "-j", "1"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "pegpar: queue.yaml:3: a value must be a plain value (text, number, true/false), " \
                       "not a list or map\n"
    assert r.stdout == "" and (tmp_path / "queue.yaml").read_text() == text


def test_two_queues_in_one_directory_keep_their_runs_apart(tmp_path, pegpar_env, bg):
    """a.yaml's jobs pass, b.yaml's fail: retry and status of a.yaml see a.yaml's
    run only, and both queues can run at the same time."""
    for name, text in (("a.yaml", "- echo a1\n- echo a2\n"), ("b.yaml", "- exit 3\n- sleep 30\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    b = bg("q", "--queue-file", "b.yaml", "-j", "2", "--no-progress")
    b_joblog = str(tmp_path / ".pegpar-b.yaml" / "joblog")
    wait_for(lambda: any(r.exitval == 3 for r in joblog.read(b_joblog)), timeout=30)
    cli(tmp_path, pegpar_env, "q", "--queue-file", "a.yaml", "-j", "1", "--no-progress")  # beside b's run
    b.p.send_signal(signal.SIGTERM)
    assert b.wait(30) == 1, b.stderr()
    assert "no job failed in the last run" in cli(tmp_path, pegpar_env, "retry", "--failed", "--queue-file", "a.yaml")
    assert load_yaml(tmp_path / "a.yaml") in (None, [])
    assert json.loads(cli(tmp_path, pegpar_env, "status", "--json", "--queue-file", "a.yaml"))["done"] == 2
    out = cli(tmp_path, pegpar_env, "retry", "--failed", "--queue-file", "b.yaml")
    assert "put back" in out and "exit 3" in (tmp_path / "b.yaml").read_text() + out


def test_logs_shows_what_its_flags_ask_for(tmp_path, pegpar_env):
    write_queue(tmp_path, "- echo out; echo err >&2\n")
    cli(tmp_path, pegpar_env, "q", "-j", "1", "--no-progress")
    [rec] = records(tmp_path)
    seq = str(rec.seq)
    assert cli(tmp_path, pegpar_env, "logs", seq) == "out\nerr\n"
    assert cli(tmp_path, pegpar_env, "logs", seq, "--stdout", "--stderr") == "out\nerr\n"
    assert cli(tmp_path, pegpar_env, "logs", seq, "--stdout") == "out\n"
    assert cli(tmp_path, pegpar_env, "logs", seq, "--stderr") == "err\n"
    # consumed.yaml, created by the run, is as private as the queue file
    assert (tmp_path / "consumed.yaml").stat().st_mode & 0o777 == 0o600


def test_broadcast_retries_a_failed_step_on_its_sub_node_before_the_next_step(tmp_path, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [localhost]\n  slot: [a, b]\n")
    write_queue(tmp_path, "- if [ -e tried-{{slot}} ]; then echo ok {{slot}}; else touch tried-{{slot}}; exit 1; fi\n"
                          "- echo second {{slot}}; ls tried-a tried-b\n")
    r = pegpar(["b", "--retries", "1", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("retrying (1/1)") == 2, r.stderr
    out = sorted(line.partition("] ")[2] for line in r.stdout.splitlines())
    assert out == ["ok a", "ok b", "second a", "second b", "tried-a", "tried-a", "tried-b", "tried-b"]
    assert sorted(rec.exitval for rec in records(tmp_path)) == [0, 0, 0, 0, 1, 1]
    # without --retries the step fails and the run stops there
    for name in ("tried-a", "tried-b"):
        (tmp_path / name).unlink()
    write_queue(tmp_path, "- if [ -e tried-{{slot}} ]; then echo ok; else touch tried-{{slot}}; exit 1; fi\n- echo x\n")
    r = pegpar(["b", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 1 and "step 1: FAILED" in r.stderr, r.stderr


def test_a_failed_broadcast_step_names_sub_nodes_in_order_in_an_aligned_table(tmp_path, pegpar_env):
    cluster_hosts(tmp_path, "- '::1'\n- 127.0.0.1\n- localhost\n")
    # the first sub-node finishes last
    write_queue(tmp_path, "- case {{hostname}} in ::1) sleep 0.6;; 127.0.0.1) sleep 0.3;; esac; exit 143\n")
    r = pegpar(["b", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 1, r.stderr
    assert "step 1: FAILED on ::1 (exit 143), 127.0.0.1 (exit 143), localhost (exit 143)" in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    header = next(line for line in lines if line.startswith("pegpar: step  "))
    row = lines[lines.index(header) + 1]
    starts = [header.index(name) for name in ("::1", "127.0.0.1", "localhost")]
    assert [row[s:s + 8] for s in starts] == ["exit 143"] * 3, (header, row)


def test_a_host_parameter_named_line_is_refused_for_input_lines(tmp_path, pegpar_env):
    """`{{ line }}` is the input line of a command given after --: a host
    parameter of that name would silently win or lose, so it is an error."""
    cluster_hosts(tmp_path, "- hostname: [localhost]\n  line: [L1]\n")
    r = pegpar(["q", "--no-progress", "--", "echo", "{{ line }}"], tmp_path, pegpar_env, input="input\n")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("pegpar: <stdin>:1: a host parameter is named `line`"), r.stderr


def test_identical_entries_are_separate_jobs_for_status_and_retry(tmp_path, pegpar_env):
    """Two identical entries: the first fails, the second passes. Neither ran
    the other again: status counts one failure, retry puts it back."""
    write_queue(tmp_path, "- test -e flag || { touch flag; exit 1; }\n" * 2)
    cli(tmp_path, pegpar_env, "q", "-j", "1", "--no-progress", code=1)
    assert status_json(tmp_path, pegpar_env)["failed"] == 1
    out = cli(tmp_path, pegpar_env, "retry", "--failed")
    assert "1 failed job(s) of the last run" in out and "run `pegpar q` to run them" in out, out
    assert load_yaml(tmp_path / "queue.yaml") == ["test -e flag || { touch flag; exit 1; }"]
