"""Pegasus users' files and habits: duplicate runners, the lock file Pegasus
looks for, umask 002 files, `-V`, and the local machine named in any case."""

from __future__ import annotations

import json
import os
import sys

from runner import pegpar, records, write_queue

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import __version__  # noqa: E402

# the shape of Pegasus's own tests/hosts.yaml and queue_parametrization.yaml
HOSTS = "- hostname:\n    - localhost\n    - localhost\n  laziness:\n    - 3\n" \
        "- hostname:\n    - localhost\n  laziness:\n    - 5\n"
QUEUE = "- echo hi from {{ hostname }}\n" \
        "- command:\n    - echo {{ low }}-{{ high }}; sleep 0.{{ laziness }}\n    - echo bye from {{ hostname }}\n" \
        "  low:\n    - 0\n    - 1\n  high:\n    - 2\n    - 3\n"


def files(tmp_path, hosts=HOSTS, queue=QUEUE):
    (tmp_path / "hosts.yaml").write_text(hosts)
    (tmp_path / "hosts.yaml").chmod(0o600)
    write_queue(tmp_path, queue)


def test_pegasus_test_files_expand_to_three_runners_and_nine_jobs(tmp_path, pegpar_env):
    files(tmp_path)
    r = pegpar(["expand", "--json"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [n["name"] for n in doc["subnodes"]] == ["localhost (laziness=3)", "localhost (laziness=3) #2",
                                                     "localhost (laziness=5)"]
    assert all(n["local"] for n in doc["subnodes"]) and doc["count"] == 9


def test_duplicate_runners_each_take_jobs_and_are_told_apart(tmp_path, pegpar_env):
    files(tmp_path)
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    recs = records(tmp_path)
    assert len(recs) == 9
    assert {rec.host for rec in recs} == {"localhost (laziness=3)", "localhost (laziness=3) #2",
                                          "localhost (laziness=5)"}
    assert "[localhost (laziness=3) #2] " in r.stdout
    logs = os.listdir(tmp_path / ".pegpar" / "logs")
    assert any(name.endswith("localhost_laziness=3_2") for name in logs), logs


def test_no_lock_file_is_left_where_pegasus_looks(tmp_path, pegpar_env):
    write_queue(tmp_path, "- echo one\n")
    (tmp_path / "queue.yaml.lock").write_text("")  # left by an earlier pegpar
    r = pegpar(["q", "--no-progress", "-j", "1"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "queue.yaml.lock").exists()
    assert (tmp_path / ".pegpar" / "queue.lock").exists()
    r = pegpar(["add", "echo two"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "queue.yaml.lock").exists()


def test_a_664_queue_in_the_owners_private_group_runs_and_a_666_one_is_refused(tmp_path, pegpar_env):
    write_queue(tmp_path, "- echo private group\n")
    (tmp_path / "queue.yaml").chmod(0o664)  # umask 002, the owner's own group
    r = pegpar(["q", "--no-progress", "-j", "1"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert "private group" in r.stdout
    write_queue(tmp_path, "- echo shared\n")
    (tmp_path / "queue.yaml").chmod(0o666)
    r = pegpar(["q", "--no-progress", "-j", "1"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "writable by group or others" in r.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo shared\n"


def test_version_as_pegasus_spells_it(tmp_path, pegpar_env):
    r = pegpar(["-V"], tmp_path, pegpar_env)
    assert (r.returncode, r.stdout.strip()) == (0, f"pegpar, version {__version__}")


def test_the_local_machine_in_any_case(tmp_path, pegpar_env):
    files(tmp_path, hosts="- LOCALHOST\n- Localhost\n", queue="- echo here {{hostname}}\n")
    r = pegpar(["expand", "--json"], tmp_path, pegpar_env)
    assert [n["local"] for n in json.loads(r.stdout)["subnodes"]] == [True, True]
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[LOCALHOST] here LOCALHOST\n"  # run here: no sshd answers for LOCALHOST


def test_a_variable_tested_by_if_may_be_missing_and_does_not_restrict_placement(tmp_path, pegpar_env):
    files(tmp_path, hosts="- hostname: [localhost]\n  gpu: [0]\n- hostname: [localhost]\n  mem: [64]\n",
          queue="- command: ['sleep 0.3; echo {{#if gpu}}gpu{{gpu}}{{else}}cpu{{/if}}{{#if extra}}!{{/if}}']\n"
                "  i: [1, 2, 3, 4]\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert {rec.host for rec in records(tmp_path)} == {"localhost (gpu=0)", "localhost (mem=64)"}
    lines = set(r.stdout.splitlines())
    assert "[localhost (gpu=0)] gpu0" in lines and "[localhost (mem=64)] cpu" in lines
    # a bare use of a variable no sub-node has is still an error, before anything runs
    write_queue(tmp_path, "- echo {{extra}}\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "unknown variable `extra`" in r.stderr


def test_parameter_names_with_dots_and_dashes_are_reached_as_segment_literals(tmp_path, pegpar_env):
    files(tmp_path, hosts="- hostname: [localhost]\n  gpu.id: [3]\n",
          queue="- command: ['echo {{[model.name]}} {{[batch-size]}} {{[gpu.id]}}']\n"
                "  model.name: [tiny]\n  batch-size: [8]\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[localhost (gpu.id=3)] tiny 8 3\n"


def test_a_bad_third_entry_stops_the_run_before_anything_runs(tmp_path, pegpar_env):
    """Every entry is checked at start: exit 2 listing the bad ones, no job
    run, the queue file byte for byte as written, no consumed.yaml."""
    text = "- echo one > one.out\n- echo two > two.out\n- command: echo {{a}}\n  a: [[1]]\n" \
           "- echo {{ nosuch }}\n- echo fine\n"
    write_queue(tmp_path, text)
    for mode in ("q", "b"):
        r = pegpar([mode, "--no-progress"], tmp_path, pegpar_env, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [
            "pegpar: queue.yaml:4: a value must be a plain value (text, number, true/false), not a list or map",
            "pegpar: queue.yaml:5: template: unknown variable `nosuch` (defined here: allocation_policy, hostname, "
            "slots)",
            "pegpar: nothing was run; fix them and run again"]
        assert (tmp_path / "queue.yaml").read_text() == text
        assert not (tmp_path / "one.out").exists() and not (tmp_path / "consumed.yaml").exists()


def test_shared_values_and_nulls_as_pegasus_reads_them(tmp_path, pegpar_env):
    write_queue(tmp_path, "- command: ['echo lr={{lr}} x={{x}} >> out']\n  lr: &lrs [0.1, 0.01]\n  x: [~]\n"
                          "- command: ['echo again={{lr}} >> out']\n  lr: *lrs\n")
    r = pegpar(["q", "--no-progress", "-j", "1"], tmp_path, pegpar_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_text().splitlines() == ["lr=0.1 x=~", "lr=0.01 x=~", "again=0.1", "again=0.01"]
    assert (tmp_path / "queue.yaml").read_text().strip() in ("", "[]")
