"""Fixtures shared by the tests: the real-sshd test cluster and the environment pegpar runs in.

`sshd`: the path of sshd. `cluster`: four sshd nodes (node-1 .. node-4) for the whole session; see tests/cluster.py.
A test may kill or freeze nodes: after each test that used the cluster, every node is
brought back. Without sshd the end-to-end tests are skipped, except under
`sh tests/run-all.sh` (which installs sshd and sets PEGPAR_TEST_REQUIRE_SSHD=1), where a
missing sshd is a failure.

`pegpar_env`: an environment for running pegpar (or the vendored parallel) as a child;
its TMPDIR, where pegpar keeps its run directories, is removed after the session.
`bg`: start pegpar children that run while the test goes on (runner.Child).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, Iterator, List

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as cluster_lib  # noqa: E402  (tests/ is not a package)
from runner import Child  # noqa: E402

NODES = 4
TRAPPED = ("parallel", "sem")  # GNU parallel's names; `sem` is parallel too


def _need_sshd() -> None:
    missing = [name for name, path in (("sshd", cluster_lib.find_sshd()),
                                       ("ssh", shutil.which("ssh")),
                                       ("ssh-keygen", shutil.which("ssh-keygen"))) if path is None]
    if not missing:
        return
    reason = (f"{', '.join(missing)} not installed: install openssh-server and openssh-client, "
              "or run `sh tests/run-all.sh`, which does")
    if os.environ.get("PEGPAR_TEST_REQUIRE_SSHD"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sshd() -> str:
    """sshd's absolute path; skips (or fails under run-all.sh) when sshd is missing."""
    _need_sshd()
    return cluster_lib.find_sshd()


@pytest.fixture(scope="session")
def cluster(sshd) -> Iterator[cluster_lib.Cluster]:
    """Four running sshd nodes, node-1 .. node-4; use `cluster.ssh_config` with ssh -F."""
    c = cluster_lib.start(NODES)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _heal_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """A node a test killed or froze is back for the next test."""
    c = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    yield
    if c is not None:
        c.heal()


@pytest.fixture(scope="session")
def run_tmp() -> Iterator[str]:
    """The TMPDIR of pegpar children: the run directory of each test's state
    directory (ControlMaster sockets, wave files) goes there, not into the
    machine's temporary directory, and is removed after the session."""
    path = tempfile.mkdtemp(prefix="pegpar-t")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pegpar_env(tmp_path, run_tmp) -> Iterator[Dict[str, str]]:
    """Environment for a pegpar child process.

    A `parallel` (and `sem`) found on PATH is a trap that fails loudly, and the test
    fails if anything ran it: pegpar must run its vendored copy, and a machine with
    GNU parallel installed must not hide a mistake. The running interpreter's bin
    directory comes next, so the `pegpar` installed with it is found (also in an
    unactivated virtualenv). Settings that would change parallel's or pegpar's
    behaviour (PARALLEL, PARALLEL_*, PEGPAR_*) and the ssh agent are dropped;
    NO_COLOR=1 keeps output plain; TMPDIR is `run_tmp`.
    """
    trap = tmp_path / "trap-bin"
    trap.mkdir()
    calls = tmp_path / "trap-calls"
    for name in TRAPPED:
        script = trap / name
        script.write_text(
            "#!/bin/sh\n"
            f"echo \"$0 $*\" >> '{calls}'\n"
            f"echo 'pegpar tests: `{name}` from PATH was run; pegpar must use its vendored GNU parallel' >&2\n"
            "exit 127\n")
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not (k == "PARALLEL" or k.startswith(("PARALLEL_", "PEGPAR_")))}
    for k in ("SSH_AUTH_SOCK", "FORCE_COLOR", "CLICOLOR_FORCE"):
        env.pop(k, None)
    path = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    env["PATH"] = os.pathsep.join([str(trap), os.path.dirname(sys.executable)] + path)
    env["NO_COLOR"] = "1"
    env["TMPDIR"] = run_tmp
    yield env
    if calls.exists():
        pytest.fail(f"a `parallel` from PATH was run:\n{calls.read_text()}", pytrace=False)


@pytest.fixture
def bg(tmp_path, pegpar_env) -> Callable[..., Child]:
    """bg("q", "--daemon", ...) starts pegpar in tmp_path; every child is ended after the test."""
    children: List[Child] = []

    def run(*args: str, cwd=None) -> Child:
        child = Child(list(args), cwd or tmp_path, pegpar_env)
        children.append(child)
        return child

    yield run
    for child in children:
        child.end()
