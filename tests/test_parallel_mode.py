"""`pegpar q -- COMMAND` run for real, as GNU parallel runs it, on the sshd
cluster and on the local machine: same output as the vendored parallel,
streaming input, bytes unchanged, input errors that end the run."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys

import pytest

from runner import cluster_hosts, pegpar, records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARALLEL = os.path.join(ROOT, "vendor", "parallel", "parallel")

# (arguments, stdin): run by pegpar over three nodes and by parallel locally
ROWS = [
    (["echo", "{}", "{.}", "{/}", ":::", "dir/a b.txt", "it's", "$HOME", "`id -u`", "é 日本", "x\\y"], None),
    (["echo", "{#}", "{1}-{2}", ":::", "a", "b", ":::", "1", "2", "3"], None),
    (["-n", "2", "printf", "'%s|\\n'", ":::", "a", "b", "c"], None),
    (["--colsep", ",", "sh", "-c", "echo $0 $1", "{2}", "{1}"], b"a,b\nc d,e\n"),
    (["-q", "sh", "-c", "echo \"$1\"", "_", "{}", ":::", "a  b", "c\"d"], None),
    (["echo"], b"one\ntwo words\n\nfour\n"),
    (["-0", "printf", "'[%s]\\n'"], b"x\ny\0z\0"),
    (["--tag", "echo", ":::", "a b", "c"], None),
    ([":::", "echo 1", "echo 'x y'", "printf '%s\\n' @ %"], None),
]


def _parallel(args, stdin, cwd, keep=False):
    p = subprocess.run(["perl", PARALLEL, "--will-cite", *(["-k"] if keep else []), *args],
                       input=stdin or b"", capture_output=True, cwd=cwd, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _pegpar(args, stdin, cwd, env, *before):
    return subprocess.run([sys.executable, "-m", "pegpar", "q", "--no-progress", *before, "--", *args],
                          input=stdin or b"", capture_output=True, cwd=cwd, env=env, timeout=120)


def _lines(out: bytes):
    return sorted(out.splitlines(keepends=True))


@pytest.mark.parametrize("args,stdin", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_output_over_the_cluster_equals_gnu_parallels(tmp_path, cluster, pegpar_env, args, stdin):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n- node-3\n")
    expected = _parallel(args, stdin, tmp_path, keep=True)
    r = _pegpar(args, stdin, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0, r.stderr
    assert _lines(r.stdout) == _lines(expected)  # parallel's order is completion order
    assert {rec.host for rec in records(tmp_path)} <= {"node-1", "node-2", "node-3"}
    keep = _pegpar(["-k", *args], stdin, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert keep.returncode == 0, keep.stderr
    assert keep.stdout == expected  # -k: exactly parallel's -k output


def test_keep_order_holds_a_fast_job_behind_a_slow_one(tmp_path, pegpar_env):
    r = _pegpar(["-k", "sleep {}; echo {}", ":::", "1.5", "0", "0.5"], None, tmp_path, pegpar_env, "-j", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"1.5\n0\n0.5\n"
    unordered = _pegpar(["sleep {}; echo {}", ":::", "1.5", "0", "0.5"], None, tmp_path, pegpar_env, "-j", "3")
    assert unordered.stdout == b"0\n0.5\n1.5\n"  # --group: each job's output when it ends


def test_each_jobs_output_is_whole_and_stdout_and_stderr_stay_apart(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    script = "for i in 1 2 3; do echo {}-$i; echo {}-err >&2; sleep 0.2; done"
    r = _pegpar([script, ":::", "a", "b", "c", "d"], None, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.decode().split("\n")[:-1]
    groups = [blocks[i:i + 3] for i in range(0, 12, 3)]
    assert sorted(g[0][0] for g in groups) == ["a", "b", "c", "d"]
    assert all(g == [f"{g[0][0]}-{i}" for i in (1, 2, 3)] for g in groups)  # never interleaved
    assert sorted(line for line in r.stderr.decode().splitlines() if line.endswith("-err")) == \
        sorted(f"{x}-err" for x in "abcd" for _ in range(3))


def test_binary_output_round_trips_exactly(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    data = bytes(range(256)) * 400 + os.urandom(50_000)
    (tmp_path / "blob").write_bytes(data)
    r = _pegpar(["gzip", "-c", "{}", ":::", str(tmp_path / "blob")], None, tmp_path, pegpar_env,
                "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0, r.stderr
    back = subprocess.run(["gunzip"], input=r.stdout, capture_output=True, timeout=60)
    assert back.returncode == 0 and back.stdout == data
    raw = _pegpar(["cat"], str(tmp_path / "blob").encode() + b"\n", tmp_path, pegpar_env,
                  "--ssh-config", cluster.ssh_config)
    assert raw.stdout == data  # not UTF-8: passed through as it came


def test_jobs_start_as_input_arrives(tmp_path, pegpar_env):
    """(echo 'echo a'; sleep 3; echo 'echo b') | pegpar q: `a` is printed long
    before the input ends."""
    p = subprocess.Popen([sys.executable, "-m", "pegpar", "q", "--no-progress"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=pegpar_env)
    try:
        p.stdin.write(b"echo a\n")
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 30)  # the hard timeout: stdin stays open meanwhile
        assert ready, "nothing printed while the input stayed open"
        first = p.stdout.readline()
        assert first == b"a\n"
        assert p.poll() is None  # still reading its input
        p.stdin.write(b"echo b\n")
        p.stdin.close()
        p.wait(timeout=60)
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        p.kill()
    assert out == b"b\n" and p.returncode == 0, err


def test_a_line_that_cannot_render_ends_the_run_whatever_j(tmp_path, pegpar_env):
    for jobs in ("2", "8"):
        r = pegpar(["q", "-j", jobs, "--no-progress"], tmp_path, pegpar_env,
                   input="echo ok\necho '{{x}}'\n", timeout=60)
        assert r.returncode == 2, r.stderr
        assert "<stdin>:2: template: unknown variable `x`" in r.stderr
        assert r.stdout in ("ok\n", "")


def test_handlebars_and_parallel_strings_in_one_command(tmp_path, cluster, pegpar_env):
    """Sub-node variables next to `{}`; a helper gets the raw line, its result is quoted once."""
    cluster_hosts(tmp_path, "- hostname: node-1\n  gpu: [0, 1]\n")
    r = _pegpar(["echo", "{{gpu}}", "{{file_name line}}", "{%}", "{}", ":::", "data/b c.txt"], None, tmp_path,
                pegpar_env, "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0, r.stderr
    gpu, rest = r.stdout.decode().split(" ", 1)
    assert rest == f"b c.txt {int(gpu) + 1} data/b c.txt\n"


def test_unsupported_options_and_misplaced_d_are_errors(tmp_path, pegpar_env):
    r = pegpar(["q", "--", "--pipe", "wc", ":::", "a"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "option --pipe is not supported" in r.stderr
    r = pegpar(["q", "-d", ",", "echo", ":::", "a"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "--delimiter" in r.stderr
    r = pegpar(["q", "--", "-a", "no-such-file", "echo"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "no-such-file: no such input file" in r.stderr
    r = pegpar(["q", "--", "--joblog", "no-dir/jl", "echo", ":::", "a"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "no-dir/jl: the joblog's directory does not exist" in r.stderr


def test_parallel_options_may_come_before_the_double_dash(tmp_path, pegpar_env):
    r = pegpar(["q", "-k", "-n", "2", "--no-progress", "echo", ":::", "a", "b", "c"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a b\nc\n"


def test_sshlogins_name_the_hosts_instead_of_hosts_yaml(tmp_path, cluster, pegpar_env):
    """-S 2/node-1,node-2: three sub-nodes, {%} numbering them per host; a
    hosts.yaml in the folder is not used (and not mentioned)."""
    cluster_hosts(tmp_path, "- node-3\n")
    (tmp_path / "logins").write_text("# the second host\nnode-2\n")
    r = _pegpar(["-S", "2/node-1", "--slf", "logins", "echo $NODE {%} {}; sleep 0.5", ":::", *"abcdef"], None,
                tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    lines = sorted(r.stdout.decode().splitlines())
    assert sorted(line.split()[2] for line in lines) == list("abcdef")
    assert {tuple(line.split()[:2]) for line in lines} <= {("node-1", "1"), ("node-1", "2"), ("node-2", "1")}
    assert {rec.host for rec in records(tmp_path)} == {"node-1", "node-1 #2", "node-2"}


def test_a_hosts_yaml_used_for_input_is_said_once(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    r = _pegpar(["echo", ":::", "a", "b"], None, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert r.returncode == 0 and sorted(r.stdout.split()) == [b"a", b"b"]
    assert r.stderr == b"pegpar: jobs run on the sub-nodes of hosts.yaml (-S names others)\n"


def test_an_ssh_command_as_sshlogin_is_refused(tmp_path, pegpar_env):
    r = pegpar(["q", "--", "-S", "ssh -p 2222 node-1", "echo", ":::", "a"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "-S:1: sshlogin 'ssh -p 2222 node-1': an ssh command" in r.stderr


def test_halt_soon_lets_running_jobs_end_and_starts_no_more(tmp_path, pegpar_env):
    args = ["--halt", "soon,fail=1", "sleep {}; echo {} >> ran; exit {}", ":::", "0", "1", "2", "3", "4"]
    r = _pegpar(args, None, tmp_path, pegpar_env, "-j", "2")
    assert r.returncode == 1, r.stderr  # the failed job's exit status, as parallel gives it
    assert sorted((tmp_path / "ran").read_text().split()) == ["0", "1", "2"]  # 2 ran on; 3 and 4 never started
    assert "--halt soon,fail=1: 1 job(s) failed" in r.stderr.decode()
    assert "2 input line(s) read and not run (--halt)" in r.stderr.decode()


def test_halt_now_kills_the_running_jobs(tmp_path, pegpar_env):
    args = ["--halt", "now,fail=1", "sleep {}; echo {} >> ran; exit 3", ":::", "0.5", "60"]
    r = _pegpar(args, None, tmp_path, pegpar_env, "-j", "2")
    assert r.returncode == 3, r.stderr
    assert (tmp_path / "ran").read_text() == "0.5\n"  # the 60 s job was killed
    assert "killing 1 running job(s)" in r.stderr.decode()



def _parallel_in(cwd, *args):
    return subprocess.run(["perl", PARALLEL, "--will-cite", "-j1", *args], capture_output=True, cwd=cwd, timeout=60)


def test_resume_failed_reruns_the_failed_jobs_only_and_parallel_agrees(tmp_path, cluster, pegpar_env):
    """The joblog's Seq is the job's position in its input, each attempt under
    it: pegpar's --resume-failed and GNU parallel's own rerun exactly the
    failed jobs, once; a job that failed and then succeeded under --retries
    counts as succeeded."""
    cluster_hosts(tmp_path, "- node-1\n- node-2\n")
    # 3 fails always until `fixed` exists; 5 fails once, then succeeds (--retries 1)
    cmd = (f"cd {tmp_path}; echo {{}} >> ran; test {{}} != 3 -o -e fixed || exit 3; "
           "test {} != 5 -o -e once || { touch once; exit 5; }")
    args = ["--joblog", "jl", cmd, ":::", "1", "2", "3", "4", "5"]
    r = _pegpar(args, None, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config, "--retries", "1")
    assert r.returncode == 1, r.stderr
    rows = [line.split("\t") for line in (tmp_path / "jl").read_text().splitlines()[1:]]
    assert sorted((int(x[0]), x[6]) for x in rows) == [(1, "0"), (2, "0"), (3, "3"), (3, "3"), (4, "0"),
                                                       (5, "0"), (5, "5")]
    (tmp_path / "ran").unlink()
    (tmp_path / "fixed").touch()
    again = _pegpar(["--resume-failed", *args], None, tmp_path, pegpar_env, "--ssh-config", cluster.ssh_config)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "ran").read_text() == "3\n"  # only the job that had failed
    (tmp_path / "ran").unlink()
    ref = _parallel_in(tmp_path, "--resume-failed", *args)
    assert ref.returncode == 0, ref.stderr
    assert not (tmp_path / "ran").exists()  # GNU parallel finds nothing left to run


def test_resume_and_retry_failed(tmp_path, pegpar_env):
    args = ["--joblog", "jl", "echo {} >> ran; exit {}", ":::", "0", "1", "0"]
    assert _pegpar(args, None, tmp_path, pegpar_env).returncode == 1
    (tmp_path / "ran").unlink()
    more = ["--joblog", "jl", "echo {} >> ran; exit {}", ":::", "0", "1", "0", "7"]
    assert _pegpar(["--resume", *more], None, tmp_path, pegpar_env).returncode == 1
    assert (tmp_path / "ran").read_text() == "7\n"  # only what the joblog does not have
    (tmp_path / "ran").unlink()
    r = _pegpar(["--retry-failed", "--joblog", "jl"], None, tmp_path, pegpar_env)
    assert r.returncode == 2  # two jobs failed: GNU parallel's exit status
    assert sorted((tmp_path / "ran").read_text().split()) == ["1", "7"]  # the joblog's failed commands
    r = pegpar(["q", "--", "--resume", "echo", ":::", "a"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "--resume needs --joblog FILE" in r.stderr


def test_input_from_a_terminal_is_announced(tmp_path, pegpar_env):
    """As GNU parallel warns: a command waiting on the terminal says so."""
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "pegpar", "q", "--dry-run", "--", "echo"], stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=pegpar_env)
        ready, _, _ = select.select([p.stderr], [], [], 30)
        assert ready, "nothing said while waiting on the terminal"
        assert p.stderr.readline() == b"pegpar: reading the input from the terminal: one per line, Ctrl-D to end\n"
        os.write(master, b"abc\n\x04")
        out, _ = p.communicate(timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert out == b"echo abc\n"



def _drawn(stderr: bytes) -> str:
    """What --bar/--eta drew, the times in it made equal (they differ from run to
    run); parallel's complaints about a missing /dev/tty left out."""
    text = "".join(line for line in stderr.decode().splitlines(keepends=True) if "/dev/tty" not in line)
    text = re.sub(r"#   [0-9.]+ sec ([^\r]*?) *\r", r"#   T sec \1\r", text)  # padded to the width
    text = re.sub(r"=\d+s ", "=Ts ", text)
    text = re.sub(r"ETA: \d+s", "ETA: Ts", text)
    return re.sub(r"\d+\.\d+s", "T.Ts", text)


@pytest.mark.parametrize("meter", ["--bar", "--eta", "--progress"])
def test_bar_eta_and_progress_end_as_gnu_parallels_do(tmp_path, pegpar_env, meter):
    """Three jobs on 2 local sub-nodes: the header (--eta, --progress) and the
    last frame (100 %, the last argument started) as parallel draws them, on
    stderr; the output on stdout as without them."""
    args = [meter, "-j", "2", "echo", ":::", "a", "b c", "d"]
    ref = subprocess.run(["perl", PARALLEL, "--will-cite", *args], stdin=subprocess.DEVNULL,
                         capture_output=True, cwd=tmp_path, timeout=60)
    ours = _pegpar(args, None, tmp_path, pegpar_env)
    assert ours.returncode == ref.returncode == 0, ours.stderr
    assert _lines(ours.stdout) == _lines(ref.stdout) == [b"a\n", b"b c\n", b"d\n"]
    drawn, expected = _drawn(ours.stderr), _drawn(ref.stderr)
    last = "\r\r#" if meter == "--bar" else "\r"
    assert drawn.rsplit(last, 1)[1] == expected.rsplit(last, 1)[1]  # the last frame
    assert drawn.split("\r", 1)[0] == expected.split("\r", 1)[0]  # the header: none for --bar
    if meter == "--bar":
        assert "100% 3:0=Ts d" in drawn


def test_bar_reads_all_input_before_the_first_job(tmp_path, pegpar_env):
    """As GNU parallel, which needs the total: no job starts while stdin is open."""
    p = subprocess.Popen([sys.executable, "-m", "pegpar", "q", "--no-progress", "--", "--bar", "echo"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=tmp_path, env=pegpar_env)
    try:
        p.stdin.write(b"a\n")
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 1.5)
        assert not ready  # nothing ran yet (the job cannot start before the end of the input)
        out, err = p.communicate(b"b\n", timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert _lines(out) == [b"a\n", b"b\n"]
    assert b"100% 2:0=" in err


@pytest.mark.parametrize("halt,values", [
    (None, "0 3 4"), ("soon,fail=2", "5 5 5"), ("now,fail=25%", "0 3 0 0"), ("soon,fail=50%", "0 3 0 4"),
    ("soon,fail=50%", "0 3 0 0"), ("soon,done=50%", "0 3 0 0"), ("soon,success=1", "3 0 4"), ("soon,done=2", "3 0 4"),
])
def test_halt_and_the_exit_status_as_gnu_parallels(tmp_path, pegpar_env, halt, values):
    """The same jobs run, one at a time, and the same exit status: how many
    failed, a percentage, or the job's own, as the vendored parallel gives."""
    args = ["-j1", *(["--halt", halt] if halt else []), "echo {} >> ran; exit {}", ":::", *values.split()]
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref = subprocess.run(["perl", PARALLEL, "--will-cite", *args], capture_output=True, cwd=ref_dir, timeout=60)
    ours = _pegpar(args, None, tmp_path, pegpar_env)
    assert ours.returncode == ref.returncode, ours.stderr
    assert (tmp_path / "ran").read_text() == (ref_dir / "ran").read_text()
