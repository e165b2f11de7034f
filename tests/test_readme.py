"""The README's two commands for a newcomer, typed one after the other in a
copy of the checkout: the first runs the bundled example and leaves the shell
where it was, the second then finds the test runner. Installing is stubbed out
(a test must not replace the environment it runs in): a `python3` and a
`pegpar` on PATH run this checkout's pegpar, and `pip install` does nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Two commands to start", 1)[1].split("\n## ", 1)[0]
    return [line[4:] for line in section.splitlines() if line.startswith("    ")]


def test_the_two_commands_work_one_after_the_other(tmp_path):
    first, second = readme_commands()
    assert first.startswith("python3 -m pip install . && ") and second == "sh tests/run-all.sh"
    clone = tmp_path / "checkout"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                                               ".hypothesis", ".pegpar*", "*.egg-info", "build"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "python3").write_text(
        f"#!/bin/sh\necho \"python3 $*\" >> '{calls}'\n"
        "[ \"$1 $2\" = '-m pip' ] && exit 0\n"
        f"PYTHONPATH='{clone}' exec '{sys.executable}' \"$@\"\n")
    (bin_dir / "pegpar").write_text(f"#!/bin/sh\nPYTHONPATH='{clone}' exec '{sys.executable}' -m pegpar \"$@\"\n")
    for name in ("python3", "pegpar"):
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEGPAR_", "PARALLEL"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python3"), TMPDIR=str(tmp_path),
               NO_COLOR="1")
    # the second command, on one quick test of this checkout: the runner's flow is what is checked
    script = f"{first}\necho \"left in $(pwd)\"\n{second} -p no:cacheprovider tests/test_cli.py -k test_version\n"
    r = subprocess.run(["sh", "-c", script], cwd=str(clone), env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"left in {clone}" in r.stdout
    assert re.search(r"\] .*", r.stdout)  # the example's jobs printed their lines
    assert "pegpar: " in r.stderr and " failed" in r.stderr  # its summary
    assert "1 passed" in r.stdout
    log = calls.read_text()
    assert "python3 -m pip install ." in log and "-m pytest" in log
