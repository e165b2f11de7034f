"""Every bad input to `pegpar expand`: exit code 2, one line `pegpar: FILE:LINE: ...`
on stderr, no traceback, and the files left byte for byte as they were."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from runner import write_queue

BOMB = "- command: [x]\n" + '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"  {c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

QUIZ_HOSTS = "- hostname: [node-1, node-2]\n  laziness: [1]\n"

# name: (files, the FILE[:LINE] the message must start with, a word it must contain)
CASES = {
    "invalid YAML syntax": ({"queue.yaml": "- ok\n- a: b: c\n"}, "queue.yaml:2", "invalid YAML"),
    "unquoted colon in a command": ({"queue.yaml": "- echo a: b\n"}, "queue.yaml:1", "quote"),
    "top level not a list": ({"queue.yaml": "command: [echo hi]\n"}, "queue.yaml:1", "list"),
    "entry neither string nor map": ({"queue.yaml": "- ok\n- [a, b]\n"}, "queue.yaml:2", "entry"),
    "map without command": ({"queue.yaml": "- ok\n- lr: [1]\n"}, "queue.yaml:2", "command"),
    "map without hostname": ({"queue.yaml": "- ok\n", "hosts.yaml": "- node-1\n- gpu: [0]\n"},
                             "hosts.yaml:2", "hostname"),
    "command as empty list": ({"queue.yaml": "- command: []\n"}, "queue.yaml:1", "empty list"),
    "param as empty list": ({"queue.yaml": "- command: [x]\n  lr: []\n"}, "queue.yaml:2", "empty list"),
    "nested values": ({"queue.yaml": "- command: [x]\n  lr: [[1, 2]]\n"}, "queue.yaml:2", "plain value"),
    "nested map value": ({"queue.yaml": "- command: [x]\n  lr: {a: 1}\n"}, "queue.yaml:2", "map"),
    "template syntax error": ({"queue.yaml": "- ok\n- echo {{#if hostname}}yes\n"}, "queue.yaml:2", "not closed"),
    "unbalanced block": ({"queue.yaml": "- echo {{#if hostname}}a{{/unless}}\n"}, "queue.yaml:1", "not closed"),
    "unknown variable": ({"queue.yaml": "- command: ['run --lr {{ lrr }}']\n  lr: [1]\n"}, "queue.yaml:1", "`lrr`"),
    "unknown helper": ({"queue.yaml": "- echo {{ shout hostname }}\n"}, "queue.yaml:1", "`shout`"),
    "unknown variable in a hostname": ({"queue.yaml": "- ok\n", "hosts.yaml": "- hostname: ['{{ nme }}-1']\n"
                                        "  name: [a]\n"}, "hosts.yaml:1", "`nme`"),
    "variable collision": ({"queue.yaml": "- command: [x]\n  laziness: [3]\n", "hosts.yaml": QUIZ_HOSTS},
                           "queue.yaml:1", "`laziness`"),
    "hostname as a queue parameter": ({"queue.yaml": "- command: [x]\n  hostname: [a]\n"}, "queue.yaml:2",
                                      "`hostname` collides"),
    "non-UTF-8 file": ({"queue.yaml": b"- echo ok\n- echo caf\xe9\n"}, "queue.yaml:2", "UTF-8"),
    "non-UTF-8 hosts file": ({"queue.yaml": "- ok\n", "hosts.yaml": b"- n\xff\n"}, "hosts.yaml:1", "UTF-8"),
    "missing queue file": ({}, "queue.yaml", "echo '- echo hello' > queue.yaml"),
    "truncated YAML": ({"queue.yaml": "- ok\n- command:\n    - echo a\n    - 'echo b"}, "queue.yaml:4", "YAML"),
    "truncated flow list": ({"queue.yaml": "- command: [a, b\n"}, "queue.yaml:2", "YAML"),
    "YAML bomb": ({"queue.yaml": BOMB}, "queue.yaml:3", "plain value"),
    "hostname with spaces": ({"queue.yaml": "- ok\n", "hosts.yaml": "- node-1\n- 'node 2'\n"},
                             "hosts.yaml:2", "hostname"),
    "hostname with shell metacharacters": ({"queue.yaml": "- ok\n", "hosts.yaml": "- 'n1;reboot'\n"},
                                           "hosts.yaml:1", "hostname"),
    "hostname as an ssh option": ({"queue.yaml": "- ok\n", "hosts.yaml": "- -oProxyCommand=x\n"},
                                  "hosts.yaml:1", "hostname"),
    "rendered hostname with command substitution": (
        {"queue.yaml": "- ok\n", "hosts.yaml": "- hostname: ['{{ p }}']\n  p: ['$(reboot)']\n"},
        "hosts.yaml:1", "hostname"),
    "zero hosts": ({"queue.yaml": "- ok\n", "hosts.yaml": "[]\n"}, "hosts.yaml", "no hosts"),
    "comments-only hosts file": ({"queue.yaml": "- ok\n", "hosts.yaml": "# nobody yet\n"}, "hosts.yaml", "no hosts"),
    "binary garbage": ({"queue.yaml": bytes(range(256)) * 4}, "queue.yaml:2", "UTF-8"),
    "binary garbage that is UTF-8": ({"queue.yaml": b"\x00\x01\x02\x03garbage\n"}, "queue.yaml:1", "YAML"),
    "two YAML documents": ({"queue.yaml": "- a\n---\n- b\n"}, "queue.yaml:2", "document"),
    # PyYAML 6.0.4 stops at a nesting depth; earlier ones parse it and pegpar refuses the value
    "deep nesting": ({"queue.yaml": "[" * 50_000 + "]" * 50_000}, "queue.yaml:1", "plain value|nesting depth"),
    "unsupported tag": ({"queue.yaml": "- !!binary aGk=\n"}, "queue.yaml:1", "tag"),
    "queue file is a directory": ({"queue.yaml/keep": "x"}, "queue.yaml", "directory"),
    "ssh URL with a bad port": ({"queue.yaml": "- ok\n", "hosts.yaml": "- node-1\n- ssh://me@h:99999\n"},
                                "hosts.yaml:2", "ssh URL"),
    "ssh URL with an empty user": ({"queue.yaml": "- ok\n", "hosts.yaml": "- ssh://@127.0.0.2\n"},
                                   "hosts.yaml:1", "ssh URL"),
    "ssh URL with a host like an option": ({"queue.yaml": "- ok\n", "hosts.yaml": "- ssh://root@-x\n"},
                                           "hosts.yaml:1", "ssh URL"),
    "NUL in a command": ({"queue.yaml": '- "echo first\\0echo second"\n'}, "queue.yaml:1", "NUL"),
    "NUL from a value": ({"queue.yaml": "- command: ['echo {{x}}']\n  x: [ok, \"a\\0b\"]\n"}, "queue.yaml:1",
                         "NUL"),
}


def snapshot(folder: Path) -> Dict[str, Optional[bytes]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, tmp_path, pegpar_env):
    files, where, word = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    for rel, content in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(work)
    proc = subprocess.run([sys.executable, "-m", "pegpar", "expand"], cwd=work, env=pegpar_env,
                          capture_output=True, text=True, errors="replace", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"pegpar: {where}: "), proc.stderr
    assert re.search(word, proc.stderr), proc.stderr
    assert proc.stdout == ""
    assert snapshot(work) == before


def test_the_same_files_when_valid_exit_0(tmp_path, pegpar_env):
    """The harness above would pass a pegpar that always fails: check it can succeed."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "queue.yaml").write_text("- echo {{ laziness }}\n")
    (work / "hosts.yaml").write_text(QUIZ_HOSTS)
    proc = subprocess.run([sys.executable, "-m", "pegpar", "expand"], cwd=work, env=pegpar_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "2 sub-nodes" in proc.stdout and "1 job from queue.yaml" in proc.stdout


@pytest.mark.parametrize("args", [["--dameon"], ["--timeout", "-1"], ["--timeout", "0"], ["--timeout", "nan"],
                                  ["--timeout", "inf"], ["-j", "x"], ["--bogus", "echo", "x"]])
@pytest.mark.parametrize("mode", ["q", "b"])
def test_a_bad_option_is_one_line_exit_2_and_runs_nothing(mode, args, tmp_path, pegpar_env):
    """Options are checked before anything is taken: a misspelt one is not a
    command to run, and a bad value does not cost the queue its head entry."""
    write_queue(tmp_path, "- echo ran >> ran\n")
    assert refused([mode, *args], tmp_path, pegpar_env).startswith(f"pegpar {mode}: ")


@pytest.mark.parametrize("args, where", [(["q"], "queue.yaml"), (["b", "--queue-file", "typo.yaml"], "typo.yaml"),
                                         (["q", "--hosts-file", "nope.yaml"], "nope.yaml"),
                                         (["expand", "--hosts-file", "nope.yaml"], "nope.yaml")])
def test_a_missing_file_named_or_needed_is_one_line_exit_2(args, where, tmp_path, pegpar_env):
    """No queue file to run (a typo in --queue-file, say) is not an empty run,
    and a hosts file named with --hosts-file must exist: only a missing
    default hosts.yaml means the local machine."""
    if "--hosts-file" in args:
        write_queue(tmp_path, "- echo ran >> ran\n")
    assert refused(args, tmp_path, pegpar_env).startswith(f"pegpar: {where}: no such ")


def refused(args, folder, env) -> str:
    """Run pegpar ARGS in `folder`: it must exit 2 with one line on stderr
    (returned) and leave every file there as it was."""
    before = snapshot(folder)
    proc = subprocess.run([sys.executable, "-m", "pegpar", *args], cwd=folder, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert snapshot(folder) == before
    return proc.stderr
