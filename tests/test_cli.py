"""The command line itself: help, version, and every subcommand listed."""

from __future__ import annotations

import subprocess
import sys

from pegpar import __version__

COMMANDS = ["add", "b", "expand", "kill", "l", "log", "logs", "q", "retry", "status", "stop"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pegpar", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pegpar, version {__version__}"


def test_help_lists_every_subcommand_with_a_whole_summary():
    r = run("--help")
    assert r.returncode == 0
    listed = {}
    for line in r.stdout.split("Commands:")[1].splitlines():
        if line.strip():
            name, summary = line.split(None, 1)
            listed[name] = summary
    assert sorted(listed) == COMMANDS
    assert all(not s.endswith("...") for s in listed.values()), listed


def test_help_does_not_import_the_heavy_modules():
    code = ("import sys; from pegpar.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pybars', 'pegpar.controller', 'yaml') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.stdout.strip().endswith("[]"), r.stdout


def test_contradicting_broadcast_flags_are_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pegpar", "b", "-e", "-i"], cwd=tmp_path, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and r.stderr.startswith("pegpar: ") and len(r.stderr.splitlines()) == 1
