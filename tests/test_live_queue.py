"""The live queue end to end: queue.yaml and hosts.yaml change while `pegpar q`
runs, and the running controller follows them (real processes, real sshd
nodes, the vendored GNU parallel; nothing mocked).

"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from pegpar.queue import hold_lock
from pegpar.state import StateDir
from runner import (HANG_GUARD, Child, cluster_hosts, commands, dispatched, load_yaml, pegpar, records,
                    wait_for, write_queue)

SOON = 10  # seconds: "the next job starts" must happen well within this (a hang guard only)


def status_file(folder) -> dict:
    return StateDir(os.path.join(str(folder), ".pegpar")).read_status() or {}


def turns_with(folder, check: Callable[[dict], bool], count: int = 2, timeout: float = 30) -> None:
    """Wait until `count` successive status snapshots (the controller writes one
    every second, from its loop) satisfy `check`: proof that the loop has gone
    round, dispatching included, in that state, without timing anything."""
    seen: List[float] = []

    def more() -> bool:
        snap = status_file(folder)
        if check(snap) and snap.get("updated") not in seen:
            seen.append(snap.get("updated"))
        elif not check(snap):
            seen.clear()
        return len(seen) >= count

    wait_for(more, timeout, what=f"{count} status snapshots in the awaited state")


def idle_after(done: int) -> Callable[[dict], bool]:
    return lambda snap: snap.get("done") == done and snap.get("running") == 0


def stop(folder, env, *extra: str) -> None:
    r = pegpar(["stop", *extra], folder, env)
    assert r.returncode == 0, r.stderr


def gate_command(gate, text: str) -> str:
    """A local job that blocks until the test creates `gate`."""
    return f"while [ ! -e {gate} ]; do sleep 0.05; done; echo {text}"


# -- the queue lock ------------------------------------------------------------------
def test_a_held_lock_lets_nothing_start_until_it_is_released(tmp_path, bg, pegpar_env):
    gate = tmp_path / "gate"
    first = gate_command(gate, "first")
    write_queue(tmp_path, f"- {first}\n- echo second\n")
    ctl = bg("q", "--daemon", "-j", "1")
    wait_for(lambda: (tmp_path / "queue.yaml").read_text() == "- echo second\n", what="the first job taken")
    with hold_lock(str(tmp_path / "queue.yaml"), "test"):
        gate.touch()
        wait_for(lambda: commands(tmp_path) == [first], what="the first job recorded")
        turns_with(tmp_path, idle_after(1))  # a free sub-node, and the loop went round twice
        assert (tmp_path / "queue.yaml").read_text() == "- echo second\n"
        assert len(dispatched(tmp_path)) == 1
        assert load_yaml(tmp_path / "consumed.yaml") == [first]
    wait_for(lambda: commands(tmp_path) == [first, "echo second"], SOON, what="the next job after the release")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert ctl.stdout().splitlines()[-1].endswith("] second")


def open_slow_editor(bg, folder, entry: str) -> Tuple[Child, Path]:
    """`pegpar l` whose editor adds `entry` once the test creates the returned
    file; returns when the editor runs (the lock is held)."""
    editing, go, editor = folder / "editing", folder / "go", folder / "slow-editor"
    editor.write_text(f"#!/bin/sh\ntouch {editing}\nwhile [ ! -e {go} ]; do sleep 0.05; done\n"
                      f"echo '- {entry}' >> \"$1\"\n")
    editor.chmod(0o700)
    lock = bg("l", "--editor", str(editor))
    wait_for(editing.exists, what="the editor started, the lock held")
    return lock, go


def test_pegpar_l_with_a_slow_editor_holds_back_the_running_controller(tmp_path, bg):
    gate = tmp_path / "gate"
    first = gate_command(gate, "first")
    write_queue(tmp_path, f"- {first}\n- echo second\n")
    ctl = bg("q", "-j", "1")
    wait_for(lambda: (tmp_path / "queue.yaml").read_text() == "- echo second\n", what="the first job taken")
    lock, go = open_slow_editor(bg, tmp_path, "echo third")
    gate.touch()
    wait_for(lambda: commands(tmp_path) == [first], what="the first job recorded")
    turns_with(tmp_path, idle_after(1))
    assert (tmp_path / "queue.yaml").read_text() == "- echo second\n"
    assert len(dispatched(tmp_path)) == 1 and ctl.running()
    go.touch()
    assert lock.wait() == 0, lock.stderr()
    assert ctl.wait() == 0, ctl.stderr()
    assert commands(tmp_path) == [first, "echo second", "echo third"]
    assert load_yaml(tmp_path / "queue.yaml") in (None, [])


def test_a_run_does_not_end_while_the_queue_is_being_edited(tmp_path, bg):
    """The last job ends while `pegpar l` is open: the entries being added
    still run (the queue is empty only once nobody is editing it)."""
    gate = tmp_path / "gate"
    last = gate_command(gate, "last")
    write_queue(tmp_path, f"- {last}\n")
    ctl = bg("q", "-j", "1")
    wait_for(lambda: dispatched(tmp_path), what="the last job taken")
    lock, go = open_slow_editor(bg, tmp_path, "echo added")
    gate.touch()
    wait_for(lambda: commands(tmp_path) == [last], what="the last job recorded")
    turns_with(tmp_path, idle_after(1))
    assert ctl.running()
    go.touch()
    assert lock.wait() == 0, lock.stderr()
    assert ctl.wait() == 0, ctl.stderr()
    assert commands(tmp_path) == [last, "echo added"]


# -- many writers, one consumer -------------------------------------------------------
ADDERS, CALLS, PER_CALL = 4, 50, 5


def test_concurrent_adds_while_consuming_run_every_entry_exactly_once(tmp_path, bg, pegpar_env):
    ctl = bg("q", "--daemon", "-j", "4")
    script = tmp_path / "adder.py"
    # One process per adder making CALLS `pegpar add` calls: the real command
    # line each time, without paying an interpreter start-up per call.
    script.write_text(
        "import sys\nfrom pegpar.cli import main\n"
        "adder = sys.argv[1]\n"
        f"for call in range({CALLS}):\n"
        f"    cmds = [f'echo {{adder}}-{{call}}-{{i}}' for i in range({PER_CALL})]\n"
        "    try:\n"
        "        main(['add', *cmds], standalone_mode=False)\n"
        "    except SystemExit as e:\n"
        "        if e.code:\n"
        "            raise\n")
    adders = [subprocess.Popen([sys.executable, str(script), f"a{k}"], cwd=tmp_path, env=pegpar_env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for k in range(ADDERS)]
    try:
        for a in adders:
            out, _ = a.communicate(timeout=HANG_GUARD)
            assert a.returncode == 0, out
    finally:
        for a in adders:
            a.kill()
    expected = sorted(f"echo a{k}-{c}-{i}" for k in range(ADDERS) for c in range(CALLS) for i in range(PER_CALL))
    wait_for(lambda: len(records(tmp_path)) >= len(expected), 600, what="every entry run")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert sorted(commands(tmp_path)) == expected  # none lost, none twice
    assert all(rec.ok for rec in records(tmp_path))
    assert sorted(load_yaml(tmp_path / "consumed.yaml")) == expected
    assert load_yaml(tmp_path / "queue.yaml") in (None, [])
    assert sorted(line.split("] ", 1)[1] for line in ctl.stdout().splitlines()) == \
        sorted(cmd[len("echo "):] for cmd in expected)


# -- hosts.yaml while it runs -----------------------------------------------------------
def write_hosts(folder, text: str) -> None:
    """Replace hosts.yaml atomically, as an editor that saves by renaming does."""
    tmp = folder / ".hosts.yaml.new"
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, folder / "hosts.yaml")


JOBS = 12


def test_nodes_join_and_leave_while_it_runs(tmp_path, cluster, bg):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    write_queue(tmp_path, "".join(f"- sleep 1; echo job-{i}\n" for i in range(JOBS)))
    ctl = bg("q", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: dispatched(tmp_path, "node-2"), what="node-2 running a job")
    write_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    wait_for(lambda: dispatched(tmp_path, "node-3"), SOON, what="node-3 taking a job")

    write_hosts(tmp_path, "- node-1\n- node-3\n")
    # the controller has read the change once its snapshot no longer offers
    # node-2 for work: gone, or leaving with its last job
    turns_with(tmp_path, lambda snap: "node-3" in _states(snap) and _states(snap).get("node-2") in (None, "leaving"),
               count=1)
    before = [r["seq"] for r in dispatched(tmp_path, "node-2")]
    assert load_yaml(tmp_path / "queue.yaml"), "the queue ran dry before node-2 left: nothing was tested"
    assert ctl.wait() == 0, ctl.stderr()
    on_node_2 = [rec for rec in records(tmp_path) if rec.host == "node-2"]
    assert sorted(rec.seq for rec in on_node_2) == before  # no job after the change
    assert all(rec.ok for rec in on_node_2)  # and the one it ran then finished and is recorded
    assert len(records(tmp_path)) == JOBS and all(rec.ok for rec in records(tmp_path))
    assert {rec.host for rec in records(tmp_path)} == {"node-1", "node-2", "node-3"}
    assert "sub-nodes added: node-3" in ctl.stderr() and "sub-nodes removed" in ctl.stderr()


def _states(snap: dict) -> Dict[str, str]:
    return {n["name"]: n["state"] for n in snap.get("nodes", [])}


def test_a_hosts_file_gone_for_a_moment_keeps_the_sub_nodes(tmp_path, cluster, bg):
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, "".join(f"- sleep 0.5; echo job-{i}\n" for i in range(8)))
    ctl = bg("q", "--ssh-config", cluster.ssh_config)
    wait_for(lambda: dispatched(tmp_path), what="the first job")
    # an editor saving by moving the old file aside before writing the new one
    os.rename(tmp_path / "hosts.yaml", tmp_path / "hosts.yaml~")
    turns_with(tmp_path, lambda snap: True, count=3)
    assert load_yaml(tmp_path / "queue.yaml"), "the queue ran dry first: nothing was tested"
    assert ctl.wait() == 0, ctl.stderr()
    assert [rec.host for rec in records(tmp_path)] == ["node-1"] * 8  # never the local machine
    assert "hosts.yaml" in ctl.stderr()


# -- a head entry that cannot run ----------------------------------------------------------
BAD_QUEUE = "# sweep\n- echo {{ nope }}\n- echo fine\n"
BAD_WHERE = "queue.yaml:2: "


def test_unknown_variable_at_the_head_runs_nothing_and_exits_2(tmp_path, pegpar_env):
    write_queue(tmp_path, BAD_QUEUE)
    r = pegpar(["q", "-j", "2"], tmp_path, pegpar_env)
    assert r.returncode == 2
    assert r.stderr.startswith(f"pegpar: {BAD_WHERE}") and "`nope`" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stdout == ""
    assert (tmp_path / "queue.yaml").read_text() == BAD_QUEUE
    assert records(tmp_path) == [] and not (tmp_path / "consumed.yaml").exists()


def test_daemon_waits_for_the_head_entry_to_be_fixed(tmp_path, bg, pegpar_env):
    write_queue(tmp_path, BAD_QUEUE)
    ctl = bg("q", "--daemon", "-j", "2")
    wait_for(lambda: BAD_WHERE in ctl.stderr(), what="the error")
    turns_with(tmp_path, idle_after(0))
    assert (tmp_path / "queue.yaml").read_text() == BAD_QUEUE and records(tmp_path) == []
    errors = [line for line in ctl.stderr().splitlines() if BAD_WHERE in line]
    assert len(errors) == 1 and "`nope`" in errors[0], ctl.stderr()  # said once, not every turn
    # a daemon's stderr may be nowhere to be seen: `pegpar status` says why nothing runs
    r = pegpar(["status", "--json"], tmp_path, pegpar_env)
    assert BAD_WHERE in (json.loads(r.stdout)["queue_error"] or ""), r.stdout
    fix = tmp_path / "fix"
    fix.write_text("#!/bin/sh\nsed -i 's/{{ nope }}/{{ hostname }}/' \"$1\"\n")
    fix.chmod(0o700)
    r = pegpar(["l", "--editor", str(fix)], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(records(tmp_path)) == 2, SOON, what="the fixed queue drained")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert sorted(line.split("] ", 1)[1] for line in ctl.stdout().splitlines()) == ["fine", "localhost"]
    assert (tmp_path / "queue.yaml").read_text() == "# sweep\n"


def test_daemon_on_an_empty_queue_starts_a_new_entry(tmp_path, bg, pegpar_env):
    ctl = bg("q", "--daemon", "-j", "1")
    turns_with(tmp_path, idle_after(0))
    r = pegpar(["add", "echo hello"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: commands(tmp_path) == ["echo hello"], SOON, what="the added entry run")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert ctl.stdout() == "[localhost/1] hello\n"


def test_files_made_writable_by_others_during_a_run_are_refused(tmp_path, bg, pegpar_env):
    """The start's check holds for the whole run: a queue file that group or
    others may write gives no job until its mode is fixed, and a hosts file
    rewritten so keeps the previous sub-nodes."""
    cluster_hosts(tmp_path, "- localhost\n")
    write_queue(tmp_path, "")
    ctl = bg("q", "--daemon", "--no-progress")
    wait_for(lambda: (tmp_path / ".pegpar" / "status.json").exists(), what="the controller's start")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- localhost\n- 127.0.0.1\n")
    hosts.chmod(0o666)
    wait_for(lambda: "the hosts file is writable by group or others" in ctl.stderr(), SOON, what="the hosts refusal")
    queue = tmp_path / "queue.yaml"
    queue.chmod(0o666)
    queue.write_text("- echo injected\n")
    wait_for(lambda: "the queue file is writable by group or others" in ctl.stderr(), SOON, what="the refusal")
    assert records(tmp_path) == [] and queue.read_text() == "- echo injected\n"
    queue.chmod(0o600)
    wait_for(lambda: len(records(tmp_path)) == 1, SOON, what="the job, once the mode is fixed")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert "sub-nodes added" not in ctl.stderr() and ctl.stdout() == "[localhost] injected\n"


def test_a_head_entry_waiting_for_a_sub_node_runs_once_one_is_added(tmp_path, bg, pegpar_env):
    """The head entry renders on no sub-node there is: adding one to hosts.yaml
    lets it run, without touching queue.yaml."""
    cluster_hosts(tmp_path, "- localhost\n")
    write_queue(tmp_path, "- echo gpu={{gpu}}\n")
    ctl = bg("q", "--daemon", "--no-progress")
    wait_for(lambda: "waiting for the queue to be fixed" in ctl.stderr(), SOON, what="the head entry refused")
    cluster_hosts(tmp_path, "- hostname: [localhost]\n  gpu: [0]\n")
    wait_for(lambda: len(records(tmp_path)) == 1, SOON, what="the job on the added sub-node")
    stop(tmp_path, pegpar_env)
    assert ctl.wait() == 0, ctl.stderr()
    assert ctl.stdout() == "[localhost (gpu=0)] gpu=0\n"
