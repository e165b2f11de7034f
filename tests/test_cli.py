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


def test_every_option_and_argument_says_what_it_is():
    """Each option has a help text; an argument's name in the usage line says what goes there."""
    from pegpar.cli import main

    for name, command in main.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help and len(param.help) > 8, (name, param.name)
        usage = run(name, "--help").stdout.splitlines()[0]
        assert "[COMMAND]..." not in usage and "[TARGET]" not in usage, usage
    assert "[-- COMMAND...]" in run("q", "--help").stdout
    assert "[SEQ | SUB-NODE]" in run("kill", "--help").stdout
    assert "without a terminal, only --editor" in " ".join(run("l", "--help").stdout.split())


def test_bare_retry_says_what_to_add():
    r = run("retry")
    assert r.returncode == 2 and "pegpar retry --failed" in r.stderr and "Missing option" not in r.stderr


def test_logs_needs_a_job_or_failed():
    r = run("logs")
    assert r.returncode == 2 and "pegpar logs 12" in r.stderr
