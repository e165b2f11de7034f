"""The fork server: GNU parallel compiled once, each parallel forked from it,
run as if started afresh (its own arguments, environment, directory, input
and stderr), watched through its exit and pid files. Real perl, real parallel."""

import os
import shutil
import signal
import threading
import time

import pytest

from pegpar import forkserver, runtime
from runner import children, pegpar, records, wait_for, write_queue

SCRIPT = runtime.parallel_script()


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLEL")}
    env["PARALLEL_HOME"] = str(tmp_path / "parallel-home")
    env.update(extra)
    return env


def _write_job(out):
    """parallel's args that write each input to OUT/<its seq>."""
    return ["--will-cite", "-0", "-j", "2", 'printf %s {} > "$OUT"/{#}']


def _start(tmp_path, args, name="w", **env):
    return forkserver.start(SCRIPT, args, env=_env(tmp_path, **env), stem=str(tmp_path / name))


def test_a_forked_parallel_runs_its_input_with_its_own_arguments_and_environment(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    forked, fd = _start(tmp_path, _write_job(out), OUT=str(out))
    assert fd is not None and forked.poll() is None
    # tab, newline, % and non-ASCII in an input reach the job byte for byte
    inputs = [b"plain", "t\tab %25 new\nline \u00e9 $HOME `x` \\".encode()]
    os.write(fd, b"".join(i + b"\0" for i in inputs))
    os.close(fd)  # EOF: parallel runs the rest and exits
    assert forked.wait(timeout=30) == 0
    assert sorted(p.read_bytes() for p in out.iterdir()) == sorted(inputs)
    assert not (tmp_path / "w.in").exists()  # the fifo is gone once both ends are open


def test_fields_pass_whole_and_the_child_works_in_the_callers_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    odd = "a\tb%0A c %% \u00e9"  # an input of `:::` (parallel splits those at newlines)
    odder = odd + "\n$x"
    args = ["--will-cite", 'printf "%s|%s|%s" {} "$ODD" "$(pwd)" > "$OUT/r"', ":::", odd]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        forked, fd = _start(tmp_path, args, OUT=str(out), ODD=odder)
    finally:
        os.chdir(cwd)
    os.close(fd)
    assert forked.wait(timeout=30) == 0
    assert (out / "r").read_text() == f"{odd}|{odder}|{tmp_path}"


def test_the_child_has_the_requests_environment_not_the_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGPAR_ONLY_IN_SERVER", "1")
    forkserver._servers.clear()  # the server started next has it
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": os.environ["PATH"], "PARALLEL_HOME": str(tmp_path / "ph"), "OUT": str(out), "ONLY": "this"}
    forked, fd = forkserver.start(SCRIPT, ["--will-cite", "-0", 'env > "$OUT/env"; : {}'],
                                  env=env, stem=str(tmp_path / "w"))
    os.write(fd, b"x\0")
    os.close(fd)
    assert forked.wait(timeout=30) == 0
    names = {line.split("=", 1)[0] for line in (out / "env").read_text().splitlines()}
    assert {"ONLY", "OUT", "PATH"} <= names
    assert "PEGPAR_ONLY_IN_SERVER" not in names


def test_its_exit_status_and_stderr_are_parallels(tmp_path):
    forked, fd = _start(tmp_path, ["--will-cite", "-0", "exit"])
    os.write(fd, b"0\x003\x004\0")
    os.close(fd)
    assert forked.wait(timeout=30) == 2  # GNU parallel: the number of failed jobs
    forked, fd = _start(tmp_path, ["--will-cite", "--no-such-option"], name="bad")
    if fd is not None:
        os.close(fd)
    assert forked.wait(timeout=30) == 255
    assert "no-such-option" in (tmp_path / "bad.stderr").read_text()


def test_its_pid_file_is_locked_while_it_runs_and_the_server_can_go_first(tmp_path):
    """What a controller started after a crash relies on: the server ends
    with pegpar, the parallels it forked run on, and their pid files tell
    that they run until they end."""
    forked, fd = _start(tmp_path, ["--will-cite", "-0", "sleep"])
    assert forkserver.running(str(tmp_path / "w.pid")) == forked.pid
    srv = forked.server
    srv.close()
    srv.process.wait(timeout=10)
    os.write(fd, b"1\0")
    assert forkserver.running(str(tmp_path / "w.pid")) == forked.pid
    assert forked.poll() is None
    os.close(fd)
    deadline = time.time() + 30
    while forkserver.running(str(tmp_path / "w.pid")) is not None and time.time() < deadline:
        time.sleep(0.05)
    assert forkserver.running(str(tmp_path / "w.pid")) is None
    assert forked.poll() == 255  # ended, with no server left to tell its status
    assert not (tmp_path / "w.exit").exists()


def test_one_compilation_serves_many_parallels_each_its_own_process_group(tmp_path):
    forks = [_start(tmp_path, ["--will-cite", "-0", "true"], name=f"w{i}") for i in range(3)]
    servers = {forked.server for forked, _ in forks}
    assert len(servers) == 1
    server = servers.pop()
    for forked, fd in forks:
        assert os.getpgid(forked.pid) == forked.pid  # signalled as a group, from the answer on
        # in the server's session, not the terminal's: a Ctrl-C there does not reach it
        assert os.getsid(forked.pid) == os.getsid(server.process.pid) == server.process.pid != os.getsid(0)
    for forked, fd in forks:
        os.close(fd)
        assert forked.wait(timeout=30) == 0


def test_what_every_parallel_works_out_at_its_start_the_server_works_out_once(tmp_path, monkeypatch):
    """`hostname`, the `tput` of parallel's colours, and the longest command
    line (parallel runs `echo` on ever longer lines where PARALLEL_HOME has
    no cache of it): once by the server, not by each fork; and each job is
    started by parallel itself, not through a `perl -e` of its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for name in ("echo", "hostname", "tput", "perl"):
        real = shutil.which(name)
        assert real, name
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\necho {name} >> '{log}'\nexec '{real}' \"$@\"\n")
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    forkserver._servers.clear()  # the server started next has the shims
    homes = [tmp_path / f"home{i}" for i in range(3)]
    counts = []
    for i, home in enumerate(homes):
        home.mkdir()  # fresh: no cache of the line length
        forked, fd = _start(tmp_path, ["--will-cite", "-j", "3", "true", ":::", "1", "2", "3"], name=f"w{i}",
                            PARALLEL_HOME=str(home))
        os.close(fd)
        assert forked.wait(timeout=30) == 0
        counts.append(log.read_text().split())
    first = counts[0]
    assert first.count("perl") == 1 and first.count("hostname") == 1
    assert first.count("tput") <= 2  # none without a terminal: its `</dev/tty` fails first
    assert first.count("echo") > 3  # the search for the longest line, once
    assert counts[-1] == first  # nothing more for the next forks, nor for their jobs
    # parallel's cache has the finding, as parallel itself would have left it
    assert [p.read_text().strip().isdigit() for p in homes[0].glob("tmp/sshlogin/*/linelen")] == [True]


def test_a_request_whose_caller_died_does_not_hold_up_the_server(tmp_path):
    """pegpar killed between its request and the server's open of the fifo:
    nobody holds the fifo for writing any more. The server does not wait for
    a writer that will never come: the child reads the end of its input at
    once (a parallel with nothing to run ends), and the server serves on."""
    srv = forkserver.Server(SCRIPT)
    try:
        answers = []
        for name in ("orphan", "next"):
            stem = str(tmp_path / name)
            os.mkfifo(stem + ".in", 0o600)  # no writer: the caller is gone
            fields = ([str(tmp_path), stem + ".in", stem + ".stderr", stem + ".pid", stem + ".exit", "3",
                       "--will-cite", "-0", "true"] + [f"{k}={v}" for k, v in _env(tmp_path).items()])
            asked = threading.Thread(target=lambda: answers.append(srv.fork(fields)), daemon=True)
            asked.start()
            asked.join(30)  # hang guard
            assert len(answers) == 1 + (name == "next"), f"the server did not answer the {name} request"
            assert answers[-1] > 0
            assert forkserver.Forked(answers[-1], stem, srv).wait(timeout=30) == 0
    finally:
        srv.process.kill()
        srv.process.wait()


def test_forked_parallels_do_not_share_the_servers_random_sequence(tmp_path):
    """parallel names its temporary files with rand: two forks must differ."""
    out = tmp_path / "out"
    out.mkdir()
    draws = []
    for i in range(2):
        forked, fd = _start(tmp_path, ["--will-cite", "-0", "echo {= $_ = int(rand(1e9)) =} > $OUT/" + str(i)],
                            name=f"w{i}", OUT=str(out))
        os.write(fd, b"x\0")
        os.close(fd)
        assert forked.wait(timeout=30) == 0
        draws.append((out / str(i)).read_text())
    assert draws[0] != draws[1]


def test_a_killed_parallel_reports_the_signal(tmp_path):
    forked, fd = _start(tmp_path, ["--will-cite", "-0", "sleep"])
    os.killpg(forked.pid, signal.SIGKILL)
    assert forked.wait(timeout=30) == -signal.SIGKILL
    os.close(fd)


def test_a_script_that_does_not_compile_is_said(tmp_path):
    bad = tmp_path / "parallel"
    bad.write_text("this is not perl {\n")
    forked, fd = forkserver.start(str(bad), ["-j1"], env=_env(tmp_path), stem=str(tmp_path / "w"))
    assert fd is None and forked.poll() == 127
    assert (tmp_path / "w.stderr").read_text().strip()
    assert not (tmp_path / "w.in").exists()


@pytest.fixture(autouse=True)
def _fresh_servers():
    yield
    for srv in forkserver._servers.values():
        srv.close()
    forkserver._servers.clear()


def test_the_cpu_of_the_jobs_counts_as_pegpars(tmp_path, pegpar_env):
    """pegpar waits for its fork server at exit, so what the parallels forked
    from it used (here a job that burns 0.5 s of CPU) counts in pegpar's
    resource usage (`time pegpar ...`, GNU parallel's own accounting of its
    children), as it did when pegpar started each parallel itself."""
    import resource

    write_queue(tmp_path, "- perl -e '1 while (times)[0] < 0.5'\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before >= 0.5


def test_a_run_goes_on_when_its_fork_server_dies(tmp_path, bg):
    """The server killed while waves run (out of memory, a stray kill): the
    running parallels go on and are followed through their pid files; the
    next wave gets a new server. Every job runs once and is recorded."""
    ran = tmp_path / "ran"
    write_queue(tmp_path, "".join(f"- echo {i} >> {ran}; sleep 1\n" for i in range(6)))
    ctl = bg("q", "-j", "2", "--no-progress")

    def server():
        found = [pid for pid, argv in children(ctl.pid) if b"-MPegparForkServer" in argv]
        return found[0] if found else None

    wait_for(lambda: ran.exists() and server() is not None, timeout=30, what="a job running")
    first = server()
    os.kill(first, signal.SIGKILL)
    assert ctl.wait(60) == 0, ctl.stderr()
    assert sorted(ran.read_text().split()) == [str(i) for i in range(6)]
    recs = records(tmp_path)
    assert len(recs) == 6 and all(rec.ok for rec in recs)



def test_a_child_that_ends_at_once_still_has_its_status_written(tmp_path):
    """A child may end (here: its directory is gone) before the server has
    noted where its status goes; the status is written all the same."""
    for i in range(10):
        stem = str(tmp_path / f"w{i}")
        os.mkfifo(stem + ".in", 0o600)
        hold = os.open(stem + ".in", os.O_RDWR)
        try:
            srv, pid, _ = forkserver._fork(SCRIPT, [str(tmp_path / "gone"), stem + ".in", stem + ".stderr",
                                                    stem + ".pid", stem + ".exit", "1", "--will-cite"]
                                           + [f"PATH={os.environ['PATH']}"])
        finally:
            os.close(hold)
        assert pid > 0
        assert forkserver.Forked(pid, stem, srv).wait(timeout=30) == 127


def test_without_perl_a_wave_says_why(tmp_path, monkeypatch):
    from pegpar import backend
    from pegpar.errors import UserError
    from pegpar.expand import SubNode

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    forkserver._servers.clear()
    rt = runtime.runtime(str(tmp_path / ".pegpar"), None)
    node = SubNode("localhost/1", "localhost", (), True)
    out = str(tmp_path / "1.out")
    with pytest.raises(UserError) as err:
        backend.start_wave(rt, [backend.Running(1, node, "true", out, out + ".err")])
    assert "perl" in str(err.value) and "No such file" in str(err.value)
    assert not [n for n in os.listdir(rt.waves_dir)]  # nothing left behind


def test_a_server_started_ahead_that_never_forked_is_killed_at_the_end_one_that_forked_is_waited_for(tmp_path):
    """pegpar starts its server before it reads its files (perl compiles
    parallel meanwhile). A run that stops before its first wave (bad input)
    does not wait for that compilation; a run whose parallels the server
    forked waits for it, so that their CPU counts as pegpar's."""
    forkserver.prestart(SCRIPT)
    early = forkserver._servers[SCRIPT]
    assert early.alive() and not early.forked
    forkserver._end_all()
    assert early.process.returncode == -signal.SIGKILL
    forked, fd = _start(tmp_path, ["--will-cite", "-0", "true"])
    os.close(fd)
    assert forked.wait(timeout=30) == 0
    used = forked.server
    assert used is not early and used.forked
    forkserver._end_all()
    assert used.process.returncode == 0


def test_a_run_stopped_by_bad_input_leaves_no_fork_server(tmp_path, pegpar_env):
    write_queue(tmp_path, "- echo a\n- {command: [unclosed\n")
    r = pegpar(["q", "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 2 and "queue.yaml" in r.stderr, r.stderr
    left = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read()
            if b"-MPegparForkServer" in argv and os.readlink(f"/proc/{name}/cwd") == str(tmp_path):
                left.append(int(name))
        except OSError:
            continue
    assert left == []
    assert (tmp_path / "queue.yaml").read_text() == "- echo a\n- {command: [unclosed\n"
