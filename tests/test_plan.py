"""pegpar.plan: the output of `pegpar expand`, and the validation it does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pegpar import plan
from pegpar.errors import UserError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def show(folder: Path, *, show_all: bool = False, as_json: bool = False, slots: int = 2) -> str:
    return plan.show(str(folder / "queue.yaml"), str(folder / "hosts.yaml"), slots,
                     show_all=show_all, as_json=as_json)


def write(folder: Path, queue: str, hosts: str = None) -> Path:
    (folder / "queue.yaml").write_text(queue)
    if hosts is not None:
        (folder / "hosts.yaml").write_text(hosts)
    return folder


def test_seed_quiz_json():
    doc = json.loads(show(EXAMPLES / "quiz", as_json=True))
    assert doc["subnodes"] == [
        {"name": "node-1 (laziness=1)", "host": "node-1", "params": {"laziness": 1}, "local": False, "slots": 1},
        {"name": "node-2 (laziness=1)", "host": "node-2", "params": {"laziness": 1}, "local": False, "slots": 1},
        {"name": "node-3 (laziness=2)", "host": "node-3", "params": {"laziness": 2}, "local": False, "slots": 1},
    ]
    assert doc["count"] == 9 and len(doc["jobs"]) == 9 and doc["truncated"] is False
    queue = str(EXAMPLES / "quiz" / "queue.yaml")
    assert doc["jobs"][0] == {"command": 'echo "Hello from {{ hostname }}, laziness {{ laziness }}"',
                              "params": {}, "source": f"{queue}:4", "slots": 1, "allocation_policy": "first_fit"}
    ops = ["+" if "{{ low }} + {{ high }}" in j["command"] else "*" for j in doc["jobs"][1:]]
    assert list(zip(ops, [j["params"] for j in doc["jobs"][1:]])) == [
        (op, {"low": lo, "high": hi}) for op in "+*" for lo in (1, 2) for hi in (3, 4)]
    assert {j["source"] for j in doc["jobs"][1:]} == {f"{queue}:5"}


def test_seed_quiz_text():
    text = show(EXAMPLES / "quiz")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[0].startswith("3 sub-nodes from ")
    assert [line.split()[:2] for line in lines[1:4]] == [["node-1", "(laziness=1)"], ["node-2", "(laziness=1)"],
                                                         ["node-3", "(laziness=2)"]]
    assert lines[5].startswith("9 jobs from ")
    assert len(lines) == 6 + 9
    assert "(low=1,high=3)" in lines[7] and "(low=2,high=4)" in lines[14]


def test_local_example_runs_without_hosts_file():
    text = show(EXAMPLES / "local", slots=3)
    assert "3 sub-nodes on this machine" in text and "localhost/1 .. localhost/3" in text
    doc = json.loads(show(EXAMPLES / "local", as_json=True, slots=3))
    assert [n["name"] for n in doc["subnodes"]] == ["localhost/1", "localhost/2", "localhost/3"]
    assert all(n["local"] and n["host"] == "localhost" and n["params"] == {} for n in doc["subnodes"])
    assert doc["count"] == 7


def test_empty_queue(tmp_path):
    text = show(write(tmp_path, "# nothing yet\n"))
    assert "0 jobs from" in text and "empty" in text
    assert json.loads(show(tmp_path, as_json=True))["jobs"] == []


def test_huge_sweep_is_counted_and_listed_up_to_the_limit(tmp_path):
    values = "[" + ", ".join(str(i) for i in range(1000)) + "]"
    write(tmp_path, f"- command: [x]\n  a: {values}\n  b: {values}\n  c: {values}\n- tail\n")
    doc = json.loads(show(tmp_path, as_json=True))
    assert doc["count"] == 10 ** 9 + 1
    assert len(doc["jobs"]) == plan.JOB_LIMIT and doc["truncated"] is True
    assert doc["jobs"][1]["params"] == {"a": 0, "b": 0, "c": 1}
    assert f"and {10 ** 9 + 1 - plan.JOB_LIMIT} more" in show(tmp_path)


def test_all_lists_every_job(tmp_path):
    write(tmp_path, "- command: [x]\n  a: [" + ", ".join(str(i) for i in range(plan.JOB_LIMIT + 5)) + "]\n")
    assert len(json.loads(show(tmp_path, as_json=True))["jobs"]) == plan.JOB_LIMIT
    doc = json.loads(show(tmp_path, as_json=True, show_all=True))
    assert len(doc["jobs"]) == doc["count"] == plan.JOB_LIMIT + 5 and doc["truncated"] is False
    assert "more" not in show(tmp_path, show_all=True)


def test_multiline_commands_stay_readable(tmp_path):
    text = show(write(tmp_path, "- |\n  echo a\n  echo b\n"))
    job_lines = text.splitlines()[-2:]
    assert job_lines[0].endswith("echo a") and job_lines[1].strip() == "echo b"


def test_missing_queue_file_hints_how_to_create_one(tmp_path):
    with pytest.raises(UserError) as info:
        show(tmp_path)
    assert info.value.where == str(tmp_path / "queue.yaml") and "echo '- echo hello'" in info.value.hint


def test_variable_missing_on_one_subnode_is_an_error(tmp_path):
    write(tmp_path, "- ok\n- echo {{ gpu }}\n", "- hostname: [a]\n  gpu: [0]\n- b\n")
    with pytest.raises(UserError, match="unknown variable `gpu`") as info:
        show(tmp_path)
    assert info.value.where == f"{tmp_path / 'queue.yaml'}:2"


def test_value_dependent_template_error_is_found(tmp_path):
    write(tmp_path, "- command: ['{{#if (gt n 1)}}big{{/if}}']\n  n: [2, many]\n")
    with pytest.raises(UserError, match="not a number"):
        show(tmp_path)


def test_collision_is_an_error(tmp_path):
    write(tmp_path, "- command: [x]\n  gpu: [1]\n", "- hostname: [a]\n  gpu: [0]\n")
    with pytest.raises(UserError, match="`gpu`"):
        show(tmp_path)


def test_hosts_errors_come_through(tmp_path):
    write(tmp_path, "- x\n", "- 'bad host'\n")
    with pytest.raises(UserError, match="invalid hostname") as info:
        show(tmp_path)
    assert info.value.where == f"{tmp_path / 'hosts.yaml'}:1"


def test_relative_paths_stay_relative(tmp_path, monkeypatch):
    write(tmp_path, "- x\n")
    monkeypatch.chdir(tmp_path)
    doc = json.loads(plan.show("queue.yaml", "hosts.yaml", 1, show_all=False, as_json=True))
    assert doc["jobs"][0]["source"] == "queue.yaml:1"
    assert os.path.exists("queue.yaml")
