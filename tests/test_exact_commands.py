"""Commands reach `sh -c` on a real sshd node byte for byte, whatever they hold.

Each text T becomes the command `printf '%s' <T shell-quoted>; echo INDEX >&2`,
given to `pegpar add` as an argument, so the job's kept stdout
(`.pegpar/logs/SEQ.SUB-NODE`) must be T's UTF-8 bytes exactly: a byte added,
dropped or changed anywhere on the way (the YAML pegpar writes and reads back,
the queue scan, the template, GNU parallel's quoting, ssh, the node's login
shell) shows.
All the texts of a test go into ONE queue run on eight sub-nodes of two hosts,
since starting pegpar per text would take minutes. Texts holding `{{` are left
out: they are templates, on purpose.
"""

from __future__ import annotations

import os
import shlex
from typing import Dict, List

import yaml
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

# everything but NUL (it cannot be in an argument) and lone surrogates (not text)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)


def command(text: str, index: int) -> str:
    return f"printf '%s' {shlex.quote(text)}; echo {index} >&2"


def run_texts(tmp_path, cluster, env, texts: List[str]) -> Dict[int, bytes]:
    """Run one job per text in one `pegpar q`; {index: the job's stdout bytes}."""
    cluster_hosts(tmp_path, HOSTS)
    # as a user would: `pegpar add` writes each argument into queue.yaml as one entry
    added = pegpar(["add", *(command(t, i) for i, t in enumerate(texts))], tmp_path, env)
    assert added.returncode == 0, added.stderr
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(records(tmp_path)) == len(texts)
    logs = tmp_path / ".pegpar" / "logs"
    out: Dict[int, bytes] = {}
    for err in logs.glob("*.err"):
        index = int(err.read_text())
        assert index not in out, f"text {index} ran twice"
        out[index] = (logs / err.name[:-len(".err")]).read_bytes()
    return out


def check(tmp_path, cluster, env, texts: List[str]) -> None:
    got = run_texts(tmp_path, cluster, env, texts)
    wrong = [(texts[i], got.get(i)) for i in range(len(texts)) if got.get(i) != texts[i].encode()]
    wrong.sort(key=lambda w: len(w[0]))  # the shortest first: the easiest to read
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
    check(tmp_path, cluster, pegpar_env, texts)


def test_the_check_sees_a_changed_byte(tmp_path, cluster, pegpar_env):
    """The harness above must be able to fail: a job that prints something else is caught."""
    cluster_hosts(tmp_path, HOSTS)
    write_queue(tmp_path, yaml.safe_dump(["printf '%s' 'a b'; echo 0 >&2", "printf 'a  b'; echo 1 >&2"]))
    r = pegpar(["q", "--ssh-config", cluster.ssh_config], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    logs = tmp_path / ".pegpar" / "logs"
    got = {int(e.read_text()): (logs / e.name[:-4]).read_bytes() for e in logs.glob("*.err")}
    assert got == {0: b"a b", 1: b"a  b"}
    assert os.path.isdir(logs)
