"""Commands reach `sh -c` on a real sshd node byte for byte, whatever they hold.

Texts T1, T2, ... become the command `printf '%s\\0' <T1 shell-quoted> ...;
echo INDEX >&2`, given to `pegpar add` as an argument, so the job's kept stdout
(`.pegpar/logs/SEQ.SUB-NODE`) must be the texts' UTF-8 bytes, each followed by
a NUL, exactly: a byte added, dropped or changed anywhere on the way (the YAML
pegpar writes and reads back, the queue scan, the template, GNU parallel's
quoting, ssh, the node's login shell) shows. All the texts of a test go into
ONE queue run on eight sub-nodes of two hosts, since starting pegpar per text
would take minutes. Texts holding `{{` are left out: they are templates, on
purpose.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import cluster_hosts, pegpar, records, write_queue

HOSTS = "- hostname: [node-1, node-2]\n  slot: [0, 1, 2, 3]\n"

NASTY = [
    "", " ", "\n", "\n\n", "\t", "\r\n", " leading and trailing ", "no newline at the end",
    "'", "''", '"', "it's \"quoted\"", "\\", "\\\\", "back\\slash\nnext", "ends with a backslash\\",
    "$HOME", "${HOME}", "$(id -u)", "`id -u`", "$((1+1))", "$1 $@ $* $# $? $$ $!", "\\$HOME",
    "%", "%%", "%s", "%d%n", "100%", "%40 %0A %2F",  # percent-encoding must not be decoded
    "@", "git@github.com:x/y", "a@b@c", "@grp",  # no hostgroups (parallel --hgrp)
    "{}", "{1}", "{2} {3}", "{.} {/} {//} {/.} {#} {%}", "{= $_ = 1 =}", "{} {", "}", "}}",
    ":::", "::::", "-", "--", "-n", "-e", "--help", "-0",
    "; rm -rf /nonexistent-pegpar-test", "a && b || c | d & e", "> x < y >> z 2>&1",
    "* ? [a-z] ~ ~root", "# not a comment", "!", "!!", "a\x7fb", "\x01\x02\x1b[31mred\x1b[0m",
    "é ü ß ñ", "日本語のテキスト", "עברית", "emoji 🎉 and 👩‍👩‍👧", "\u00a0non-breaking\u2009thin",
    "\ufeffbom", "line\u2028separator\u2029paragraph", "nel\x85here",
    "- looks like an entry\n- another", "key: value", "command: [x]", "&anchor *alias", "!!python/object",
    "---", "...", "|", ">", "? complex", "\"unterminated", "'unterminated",
    "x" * 5000, "\n".join(f"line {i}" for i in range(200)),
]

# everything but NUL (it cannot be in an argument) and lone surrogates (not text),
# with the characters that shells, YAML, GNU parallel and templates treat specially
# drawn more often than chance would
SPECIAL = list("'\"$`\\%@{}[]()<>|&;*?~#!:=-\n\r\t ") + ["\x85", "\u2028", "\ufeff", "é", "日"]
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL),
                         st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), max_size=60)


def command(texts: List[str], index: int) -> str:
    """Prints each text followed by a NUL (which no text holds), then its index on stderr."""
    return "printf '%s\\0' " + " ".join(shlex.quote(t) for t in texts) + f"; echo {index} >&2"


def run_commands(tmp_path, cluster, env, commands: List[str]) -> Dict[int, bytes]:
    """Run the commands, one job each, in one `pegpar q` (cluster None: on 4
    local sub-nodes); {index: the job's stdout bytes}."""
    if cluster is not None:
        cluster_hosts(tmp_path, HOSTS)
    # as a user would: `pegpar add` writes each argument into queue.yaml as one entry
    added = pegpar(["add", *commands], tmp_path, env)
    assert added.returncode == 0, added.stderr
    where = ["--ssh-config", cluster.ssh_config] if cluster is not None else ["-j", "4"]
    r = pegpar(["q", *where], tmp_path, env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(records(tmp_path)) == len(commands)
    logs = tmp_path / ".pegpar" / "logs"
    out: Dict[int, bytes] = {}
    for err in logs.glob("*.err"):
        index = int(err.read_text().split()[-1])  # the last line: a node's login shell may say things first
        assert index not in out, f"command {index} ran twice"
        out[index] = (logs / err.name[:-len(".err")]).read_bytes()
    return out


def check(tmp_path, cluster, env, texts: List[str], per_job: int = 1) -> None:
    """Every text comes back exactly; `per_job` texts share one command (a job
    costs far more than a text, and the texts stay separate arguments)."""
    groups = [texts[i:i + per_job] for i in range(0, len(texts), per_job)]
    got = run_commands(tmp_path, cluster, env, [command(g, i) for i, g in enumerate(groups)])
    wrong = []
    for i, group in enumerate(groups):
        expected = b"".join(t.encode() + b"\0" for t in group)
        if got.get(i) != expected:
            back = (got.get(i) or b"").split(b"\0")
            wrong += [(t, back[k] if k < len(back) else None) for k, t in enumerate(group)
                      if k >= len(back) or back[k] != t.encode()] or [(group, got.get(i))]
    wrong.sort(key=lambda w: len(str(w[0])))  # the shortest first: the easiest to read
    assert not wrong, f"{len(wrong)} of {len(texts)} texts changed on the way; the shortest: {wrong[:5]}"


def test_chosen_nasty_commands_reach_the_node_exactly(tmp_path, cluster, pegpar_env):
    assert not any("{{" in t for t in NASTY)
    check(tmp_path, cluster, pegpar_env, NASTY)


def test_any_text_reaches_the_node_exactly(tmp_path, cluster, pegpar_env):
    """A property of every text (hypothesis, 200 examples): the examples are
    gathered first and then run together, one job each, in one pegpar run."""
    texts: List[str] = []

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(TEXT.filter(lambda t: "{{" not in t))
    def gather(text: str) -> None:
        texts.append(text)

    gather()
    assert len(texts) >= 200
    check(tmp_path, cluster, pegpar_env, texts, per_job=5)


def test_the_check_sees_a_changed_byte(tmp_path, cluster, pegpar_env, monkeypatch):
    """The harness must be able to fail: a command that prints one byte more is caught."""
    real = command
    monkeypatch.setattr(sys.modules[__name__], "command",
                        lambda texts, index: real(texts, index).replace("; echo", "; printf x; echo", 1)
                        if index == 1 else real(texts, index))
    with pytest.raises(AssertionError, match=r"1 of 3 texts changed on the way; the shortest: \[\(\['b'\]"):
        check(tmp_path, cluster, pegpar_env, ["a", "b", "c"])


@pytest.mark.parametrize("remote", [True, False], ids=["ssh", "local"])
def test_a_command_keeps_its_own_leading_and_trailing_whitespace(tmp_path, request, pegpar_env, remote):
    """The whole command is sh -c's argument as written: whitespace around it
    included (each job prints its shell's argv, which holds the command)."""
    cluster = request.getfixturevalue("cluster") if remote else None
    around = ["", " ", "  ", "\t", "\n", " \n\t "]
    commands = [f"{lead}cat /proc/$$/cmdline; echo {i} >&2{trail}"
                for i, (lead, trail) in enumerate((a, b) for a in around for b in around if a or b)]
    got = run_commands(tmp_path, cluster, pegpar_env, commands)
    assert len(got) == len(commands)
    wrong = [(c, got.get(i, b"").split(b"\0")[2:3]) for i, c in enumerate(commands)
             if got.get(i, b"").split(b"\0")[:3] != [b"sh", b"-c", c.encode()]]
    assert not wrong, wrong[:3]


def test_an_input_line_that_is_not_utf8_reaches_the_node_and_the_joblog_as_it_came(tmp_path, cluster, pegpar_env):
    """A file name in Latin-1 on stdin: the job gets its bytes, the joblog keeps
    them, and the next run on the queue starts (a crash writing the joblog
    used to leave a journal every later run crashed on)."""
    cluster_hosts(tmp_path, "- node-1\n")
    args = ["q", "--no-progress", "--ssh-config", cluster.ssh_config]
    r = subprocess.run([sys.executable, "-m", "pegpar", *args, "--", "printf '%s\\0'", "{{ line }}"], cwd=tmp_path,
                       env=pegpar_env, input=b"caf\xe9.csv\nother.csv\n", capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    logs = tmp_path / ".pegpar" / "logs"
    assert sorted(p.read_bytes() for p in logs.iterdir() if not p.name.endswith(".err")) == \
        [b"caf\xe9.csv\0", b"other.csv\0"]
    joblog = (tmp_path / ".pegpar" / "joblog").read_bytes()
    assert b"\tprintf '%s\\0' 'caf\xe9.csv'\n" in joblog and b"\tprintf '%s\\0' other.csv\n" in joblog
    assert pegpar(["status"], tmp_path, pegpar_env).returncode == 0
    write_queue(tmp_path, "- true\n")
    again = pegpar(args, tmp_path, pegpar_env)
    assert again.returncode == 0, again.stderr
