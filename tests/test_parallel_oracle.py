"""GNU parallel's command line: `pegpar q --dry-run -- ARGS` prints the same
commands as the vendored `parallel --dry-run ARGS`, on the same input.

Each row is a one-liner a GNU parallel user would write; `-j 1` in every row
makes `{%}` (the job slot) the same on both sides."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARALLEL = os.path.join(ROOT, "vendor", "parallel", "parallel")

NL = "l1\nl2"

# (arguments after `parallel`/`pegpar q --`, stdin bytes or None)
ROWS = [
    (["echo", ":::", "a", "b", "c"], None),
    (["echo", "{}", ":::", "b c.txt", "it's", "a$b", "`x`", "back\\slash", "100%", "x@y", ""], None),
    (["echo", "{}", "{.}", "{/}", "{//}", "{/.}", ":::", "dir/a.tar.gz", "x", "a/", ".hidden", "a.b/", "/",
      "dir.d/file", "a.", "d/e/f.g"], None),
    (["echo", "{#}", "{%}", "{}", ":::", "a", "b", "c"], None),
    (["echo", "{1}", "{2}", ":::", "a", "b", ":::", "1", "2"], None),
    (["echo", "{2}-{1}", ":::", "a", "b", ":::", "1", "2", "3"], None),
    (["echo", ":::", "a", "b", "c", ":::+", "1", "2", "3"], None),
    (["echo", ":::", "a", "b", "c", ":::+", "1", "2"], None),
    (["echo", "{}", ":::", "a", "b", ":::", "1"], None),
    (["echo", "{1.}", "{1/}", "{1//}", "{1/.}", "{2}", "{3}z", ":::", "d.x/a.b", ":::", "q"], None),
    (["echo", "{-1}", "{-2}", ":::", "a", ":::", "b"], None),
    (["echo", "{1}{2}", ":::", "a", ":::", "b c"], None),
    (["-n", "2", "echo", ":::", "a", "b", "c"], None),
    (["-n2", "echo", "x{}y{.}z", "{#}", ":::", "a.1", "b.2"], None),
    (["-N", "2", "echo", "{2}-{1}", ":::", "a", "b", "c", "d"], None),
    (["-N2", "echo", "{1}-{2}", ":::", "a", "b", "c"], None),
    (["-N", "2", "echo", ":::", "a", "b", "c", "d", "e"], None),
    (["--max-args=2", "echo", ":::", "a", "b", ":::", "1", "2"], None),
    (["-N0", "echo", "hi", ":::", "a", "b"], None),
    (["-q", "echo", "a b", "{}", ":::", "x"], None),
    (["-q", "echo", "{}.txt", "a$b", ":::", "x y", "it's"], None),
    (["-q", "-n2", "echo", "x{}y", ":::", "a b", "c"], None),
    (["-I", ",,", "echo", ",,", "{.}", "{}", ":::", "a.b"], None),
    (["--replace", "XX", "echo", "XX/XX", ":::", "p q"], None),
    (["--er", "XX", "echo", "XX", "{.}", ":::", "a.b"], None),
    (["--colsep", ",", "echo", "{2}", "{1}", ":::", "a,b", "c,d"], None),
    (["--colsep", ",", "echo", ":::", "a,b"], None),
    (["-C", " +", "echo", "{2}", ":::", "a   b"], None),
    (["--colsep=,", "echo", "{1}", "{2}", "{3}", ":::", "a,b", ":::", "c"], None),
    (["--trim", "lr", "echo", ":::", " a "], None),
    (["--trim", "r", "echo", ":::", " a "], None),
    (["--colsep", ",", "--trim", "lr", "echo", "{1}:{2}", ":::", " a , b "], None),
    (["echo", ":::", NL], None),
    (["-d", ",", "echo", ":::", "a,b", "c"], None),
    (["echo"], b"a.txt\nb c.txt\n"),
    (["wc", "-l", "{}"], b"x y.csv\nz.csv\n"),
    (["echo", "{}", "{.}"], b"a.txt\n"),
    (["echo"], b"a\n\nb\n"),
    (["-r", "echo"], b"a\n\nb\n"),
    (["echo"], b"a\r\nb"),
    (["-0", "echo"], b"a b\0c\nd\0"),
    (["--null", "echo", "{}"], b"x\0"),
    (["-d", "\\t", "echo"], b"a\tb"),
    (["-d", "::", "echo"], b"a::b"),
    (["echo", "{}"], "é ü 日本\n".encode()),
    (["echo", ":::"], None),
    ([":::", "echo 1", "echo 'x y'"], None),
    (["echo", ":::", "{}", "{{x}}"], None),
    (["echo", "{=", "1", "=}", ":::", "a"], None),  # refused by pegpar, below
    (["-a", "FILE1", "echo"], None),
    (["-a", "FILE1", "-a", "FILE2", "echo"], None),
    (["-a", "FILE1", "echo", ":::", "a", "b"], None),
    (["echo", "::::", "FILE1", "::::+", "FILE2"], None),
    (["echo", "::::", "FILE1", ":::", "p", "q"], None),
    (["-a", "-", "echo"], b"s\n"),
    (["echo", "::::", "-", ":::", "1", "2"], b"s\nt\n"),
    (["-kq", "echo", ":::", "a b"], None),
    (["echo  a   {}", ":::", "1"], None),
    (["sh", "-c", "echo {}", ":::", "$HOME", "a;b"], None),
]
REFUSED = {("echo", "{=", "1", "=}", ":::", "a")}


def _files(tmp_path, args):
    (tmp_path / "f1").write_text("x\ny\n")
    (tmp_path / "f2").write_text("1\n2\n")
    return [str(tmp_path / "f1") if a == "FILE1" else str(tmp_path / "f2") if a == "FILE2" else a for a in args]


def _parallel(args, stdin, cwd):
    p = subprocess.run(["perl", PARALLEL, "--will-cite", "--dry-run", "-j", "1", *args],
                       input=stdin or b"", capture_output=True, cwd=cwd, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _pegpar(args, stdin, cwd, env):
    return subprocess.run([sys.executable, "-m", "pegpar", "q", "--dry-run", "-j", "1", "--", *args],
                          input=stdin or b"", capture_output=True, cwd=cwd, env=env, timeout=60)


@pytest.mark.parametrize("args,stdin", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_dry_run_equals_gnu_parallels(tmp_path, pegpar_env, args, stdin):
    args = _files(tmp_path, args)
    if tuple(args) in REFUSED:
        r = _pegpar(args, stdin, tmp_path, pegpar_env)
        assert r.returncode == 2 and b"not supported" in r.stderr, r.stderr
        return
    expected = _parallel(args, stdin, tmp_path)
    r = _pegpar(args, stdin, tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected


def test_the_table_is_large():
    assert len(ROWS) >= 40
