"""The vendored GNU parallel: the file its README describes, and the one pegpar runs."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

from pegpar import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDOR = os.path.join(ROOT, "vendor", "parallel")


def test_script_matches_the_recorded_sha256():
    readme = open(os.path.join(VENDOR, "README.md")).read()
    recorded = re.search(r"sha256 of `parallel` \| `([0-9a-f]{64})`", readme).group(1)
    with open(os.path.join(VENDOR, "parallel"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == recorded


def test_pegpar_runs_its_own_copy_with_its_own_home(tmp_path):
    script = runtime.parallel_script()
    assert os.path.basename(os.path.dirname(script)) in ("vendor", "parallel")
    with open(script, "rb") as a, open(os.path.join(VENDOR, "parallel"), "rb") as b:
        assert a.read() == b.read()
    rt = runtime.runtime(str(tmp_path / ".pegpar"), None)
    env = rt.env()
    assert env["PARALLEL_HOME"].startswith(rt.run_dir) and "PARALLEL" not in env
    out = subprocess.run(["perl", script, "--version"], env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    assert out.startswith("GNU parallel 20240222")
    assert oct(os.stat(rt.state_dir).st_mode & 0o777) == "0o700"


def test_the_ssh_wrapper_never_turns_off_host_key_checking(tmp_path):
    rt = runtime.runtime(str(tmp_path / ".pegpar"), None)
    text = open(rt.ssh).read()
    assert "StrictHostKeyChecking" not in text and "UserKnownHostsFile" not in text
    assert "ControlMaster=auto" in text and " " not in rt.ssh
