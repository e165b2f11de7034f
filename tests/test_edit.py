"""pegpar.edit: `pegpar l` edits a copy under the lock; `pegpar add` validates first."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time

import filelock
import pytest
import yaml

from pegpar import edit, queue
from pegpar.errors import UserError
from pegpar.queue import QueueFile

ORIGINAL = "# keep me\n- echo a\n- echo b\n"


def script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def qpath(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(ORIGINAL)
    path.chmod(0o640)
    return path


@pytest.fixture(autouse=True)
def no_editor_env(monkeypatch):
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)


def lock_is_free(path) -> bool:
    lock = filelock.FileLock(queue.lock_path(str(path)))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    lock.release()
    return True


def test_invalid_edit_is_kept_aside_and_the_queue_restored(tmp_path, qpath, capsys):
    broken = "- echo a\n- command: [b\n"
    editor = script(tmp_path, "ed.sh", f"printf '%s' '{broken}' > \"$1\"\n")
    assert edit.edit_queue(str(qpath), editor) == 2
    assert qpath.read_text() == ORIGINAL
    backup = tmp_path / "queue.yaml.rejected"
    assert backup.read_text() == broken
    err = capsys.readouterr().err
    assert f"{qpath}:" in err and str(backup) in err
    assert lock_is_free(qpath)
    # no edit copy left (.pegpar/ is the queue's state directory, which holds its lock)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".pegpar"] == []


def test_an_edit_with_a_template_syntax_error_is_rejected(tmp_path, qpath, capsys):
    editor = script(tmp_path, "ed.sh", "printf '%s\\n' '- echo {{#if x}}' >> \"$1\"\n")
    assert edit.edit_queue(str(qpath), editor) == 2
    assert qpath.read_text() == ORIGINAL
    assert "is not closed" in capsys.readouterr().err
    assert lock_is_free(qpath)


def test_valid_edit_replaces_the_queue_keeping_its_mode(tmp_path, qpath):
    # saves by renaming a new file over the copy, as some editors do
    editor = script(tmp_path, "ed.sh", "{ cat \"$1\"; printf -- '- echo new\\n'; } > \"$1.new\"\n"
                    "chmod 666 \"$1.new\"\nmv \"$1.new\" \"$1\"\n")
    assert edit.edit_queue(str(qpath), editor) == 0
    assert qpath.read_text() == ORIGINAL + "- echo new\n"
    assert stat.S_IMODE(os.stat(qpath).st_mode) == 0o640
    assert lock_is_free(qpath)


def test_layout_pops_cannot_cut_is_rejected(tmp_path, qpath):
    editor = script(tmp_path, "ed.sh", "printf -- '[echo a, echo b]\\n' > \"$1\"\n")
    assert edit.edit_queue(str(qpath), editor) == 2
    assert qpath.read_text() == ORIGINAL


def test_editor_with_arguments(tmp_path, qpath):
    editor = script(tmp_path, "ed.sh", '[ "$1" = --append ] || exit 3\nprintf -- \'- %s\\n\' "$2" >> "$3"\n')
    assert edit.edit_queue(str(qpath), f"{editor} --append 'echo hi there'") == 0
    assert yaml.safe_load(qpath.read_text())[-1] == "echo hi there"


def test_missing_editor_is_a_clear_error_and_releases_the_lock(qpath):
    with pytest.raises(UserError, match="not found"):
        edit.edit_queue(str(qpath), "no-such-editor-anywhere --wait")
    assert qpath.read_text() == ORIGINAL
    assert lock_is_free(qpath)


def test_editor_failure_leaves_the_queue(tmp_path, qpath, capsys):
    editor = script(tmp_path, "ed.sh", "printf -- '- changed\\n' > \"$1\"\nexit 1\n")
    assert edit.edit_queue(str(qpath), editor) == 1
    assert qpath.read_text() == ORIGINAL
    assert "status 1" in capsys.readouterr().err


def test_editor_priority(tmp_path, monkeypatch):
    visual = script(tmp_path, "visual.sh", "")
    monkeypatch.setenv("EDITOR", "no-such-editor")
    monkeypatch.setenv("VISUAL", f"{visual} -w")
    assert edit.choose_editor(None) == [visual, "-w"]
    assert edit.choose_editor("sh -c true") == ["sh", "-c", "true"]
    monkeypatch.delenv("VISUAL")
    with pytest.raises(UserError, match="no-such-editor.*EDITOR"):
        edit.choose_editor(None)


def test_without_a_terminal_only_an_editor_given_with_editor_runs(tmp_path, qpath, monkeypatch):
    monkeypatch.setenv("EDITOR", "vi")
    with pytest.raises(UserError, match="no terminal.*--editor"):
        edit.choose_editor(None, terminal=False)
    assert edit.choose_editor("sh -c true", terminal=False) == ["sh", "-c", "true"]


def test_pegpar_l_without_a_terminal_fails_at_once_instead_of_waiting(tmp_path, qpath, pegpar_env):
    # vi, the fallback, would wait for a terminal forever; so would $EDITOR here
    env = dict(pegpar_env, EDITOR="vi")
    env.pop("VISUAL", None)
    r = subprocess.run([sys.executable, "-m", "pegpar", "l"], cwd=str(tmp_path), env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)  # a hang guard only
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "no terminal" in r.stderr and "--editor" in r.stderr
    assert qpath.read_text() == ORIGINAL and lock_is_free(qpath)


def test_interactive_edit_again_then_restore(tmp_path, qpath, monkeypatch):
    # first round writes a broken file, the second round fixes it
    editor = script(tmp_path, "ed.sh", 'if [ -e "$1.once" ]; then printf -- \'- fixed\\n\' > "$1"; '
                    'else : > "$1.once"; printf -- \'- [broken\\n\' > "$1"; fi\n')
    monkeypatch.setattr(edit, "_interactive", lambda: True)
    monkeypatch.setattr(edit, "_ask", lambda: "e")
    try:
        assert edit.edit_queue(str(qpath), editor) == 0
    finally:
        for p in tmp_path.glob("*.once"):
            p.unlink()
    assert qpath.read_text() == "- fixed\n"

    broken = script(tmp_path, "broken.sh", "printf -- '- [broken\\n' > \"$1\"\n")
    monkeypatch.setattr(edit, "_ask", lambda: "r")
    assert edit.edit_queue(str(qpath), broken) == 2
    assert qpath.read_text() == "- fixed\n"
    assert (tmp_path / "queue.yaml.rejected").read_text() == "- [broken\n"


def test_edit_creates_a_missing_queue(tmp_path):
    path = tmp_path / "queue.yaml"
    editor = script(tmp_path, "ed.sh", "printf -- '- first\\n' > \"$1\"\n")
    assert edit.edit_queue(str(path), editor) == 0
    assert path.read_text() == "- first\n"
    assert not os.stat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    untouched = tmp_path / "other.yaml"
    assert edit.edit_queue(str(untouched), script(tmp_path, "noop.sh", "")) == 0
    assert not untouched.exists()


def _edit_in_child(path: str, editor: str) -> None:
    edit.edit_queue(path, editor)


def test_killed_lock_mode_leaves_no_stale_lock(tmp_path, qpath):
    pidfile = tmp_path / "editor.pid"
    editor = script(tmp_path, "ed.sh", f"echo $$ > {pidfile}\nexec sleep 60\n")
    child = multiprocessing.get_context("fork").Process(target=_edit_in_child, args=(str(qpath), editor))
    child.start()
    try:
        deadline = time.monotonic() + 30  # hang guard
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline and child.is_alive()
            time.sleep(0.02)
        assert QueueFile(str(qpath)).take(1, lambda job: None) is None  # `pegpar l` holds the lock
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        if child.is_alive():
            child.kill()
    jobs, err = QueueFile(str(qpath)).take(1, lambda job: None)
    assert [j.command for j in jobs] == ["echo a"] and err is None


def _hold(path: str, ready, release) -> None:
    with queue.hold_lock(path, "test holder"):
        ready.set()
        release.wait(30)


def test_add_waits_for_the_lock_and_says_who_holds_it(qpath, capsys):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(qpath), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        ctx.Process(target=lambda: (time.sleep(1.0), release.set())).start()
        edit.add_commands(str(qpath), ["echo c", "echo d {{ x }}"], front=False)
    finally:
        release.set()
        holder.join(30)
    err = capsys.readouterr().err
    assert "waiting for the lock" in err and "test holder" in err
    assert qpath.read_text().startswith(ORIGINAL)
    assert yaml.safe_load(qpath.read_text())[-2:] == ["echo c", "echo d {{ x }}"]


def test_add_yaml_front_and_validation(qpath):
    edit.add_yaml(str(qpath), "- command: [train]\n  lr: 0.1\n- plain\n", front=True)
    assert qpath.read_text().startswith("# keep me\n- command:")
    assert qpath.read_text().endswith(ORIGINAL[len("# keep me\n"):])
    assert yaml.safe_load(qpath.read_text())[:2] == [{"command": ["train"], "lr": [0.1]}, "plain"]
    before = qpath.read_text()
    with pytest.raises(UserError) as err:
        edit.add_yaml(str(qpath), "- ok\n- command: [x\n", front=False)
    assert err.value.where.startswith("<stdin>:")
    with pytest.raises(UserError):
        edit.add_commands(str(qpath), [], front=False)
    assert qpath.read_text() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_pegpar_l_stopped_by_a_signal_keeps_the_edit_aside_and_the_queue(tmp_path, qpath, pegpar_env, signum):
    """SIGTERM, or SIGHUP from a closed terminal, while the editor runs: the
    queue stays as it was, the lock is free, the editor is told to stop, and
    the text edited so far is kept beside the queue, as for a rejected edit."""
    editor = script(tmp_path, "ed.sh", 'echo "- echo typed so far" >> "$1"; echo $$ > "$1.pid"; exec sleep 30\n')
    p = subprocess.Popen([sys.executable, "-m", "pegpar", "l", "--editor", editor], cwd=str(tmp_path),
                         env=pegpar_env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not list(tmp_path.glob(".queue.yaml.*.pid")) and time.time() < deadline:
        time.sleep(0.05)
    [pid_file] = tmp_path.glob(".queue.yaml.*.pid")
    p.send_signal(signum)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signum, err
    assert f"stopped by signal {signum}; queue.yaml left unchanged" in err, err
    assert qpath.read_text() == ORIGINAL and lock_is_free(qpath)
    assert (tmp_path / "queue.yaml.rejected").read_text() == ORIGINAL + "- echo typed so far\n"
    assert not list(tmp_path.glob(".queue.yaml.*.edit.yaml"))
    editor_pid = int(pid_file.read_text())
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{editor_pid}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{editor_pid}")  # the editor was stopped too
