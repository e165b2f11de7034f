"""Changing the queue by hand or from scripts: `pegpar l` and `pegpar add`.

Both take the queue's lock (waiting, and saying for whom), so a pop never
interleaves with them. `pegpar l` edits a copy next to queue.yaml and installs
it with one rename only once it is valid: the controller never sees a half-
written or invalid queue. A rejected edit is kept as `<queue>.rejected`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from typing import List, Optional, Union

import click

from pegpar import durable, expand, queue, queuetext, spec
from pegpar.errors import UserError

FALLBACK_EDITORS = ("vi", "vim", "nano")


def edit_queue(queue_path: str, editor: Optional[str]) -> int:
    """`pegpar l`: edit the queue under its lock; the exit code.

    0: saved (or unchanged); 1: the editor failed, queue unchanged;
    2: the edited text was invalid, queue unchanged, text kept in the backup."""
    argv = choose_editor(editor, terminal=_interactive())
    real = os.path.realpath(queue_path)
    if os.path.isdir(real):
        raise UserError("is a directory, not a queue file", where=queue_path)
    try:
        with queue.hold_lock(queue_path, "pegpar l", notify=_say):
            return _edit_locked(queue_path, real, argv)
    except KeyboardInterrupt:
        _say(f"interrupted; {queue_path} left unchanged")
        return 130


def choose_editor(flag: Optional[str], terminal: bool = True) -> List[str]:
    """The editor's argv: --editor, then $VISUAL, $EDITOR, then vi, vim or nano.
    Without a terminal only --editor counts: the others are editors for a
    person at a terminal, and would wait for one forever."""
    if not terminal and not (flag and flag.strip()):
        raise UserError("no terminal to edit the queue in (standard input is not a terminal)",
                        hint="pass --editor CMD, a command that edits the file named as its last argument "
                             "without a terminal, or add entries with `pegpar add`")
    for origin, value in (("--editor", flag), ("$VISUAL", os.environ.get("VISUAL")),
                          ("$EDITOR", os.environ.get("EDITOR"))):
        if value and value.strip():
            try:
                argv = shlex.split(value)
            except ValueError as err:
                raise UserError(f"cannot split the editor command {value!r} ({origin}): {err}") from None
            if shutil.which(argv[0]) is None:
                raise UserError(f"editor {argv[0]!r} not found ({origin})",
                                hint="pass --editor, or set $VISUAL or $EDITOR to an installed editor")
            return argv
    for name in FALLBACK_EDITORS:
        if shutil.which(name):
            return [name]
    raise UserError("no editor found", hint="pass --editor, or set $VISUAL or $EDITOR")


def add_commands(queue_path: str, commands: List[str], front: bool) -> None:
    """`pegpar add CMD...`: each argument is one entry (a bare command)."""
    if not commands:
        raise UserError("no command given", hint="pegpar add 'CMD' ..., or pegpar add - to read YAML entries")
    queue.QueueFile(queue_path, notify=_say).add(list(commands), front=front)


def add_yaml(queue_path: str, text: str, front: bool) -> None:
    """`pegpar add -`: a YAML list of entries (as in queue.yaml) read from
    stdin; all are validated before any is added."""
    entries = spec.parse_queue(text, "<stdin>")
    objs: List[Union[str, dict]] = [expand.canonical_entry(entry.dims, entry.plain) for entry in entries]
    queue.QueueFile(queue_path, notify=_say).add(objs, front=front)


def _edit_locked(queue_path: str, real: str, argv: List[str]) -> int:
    try:
        with open(real, "rb") as f:
            original: Optional[bytes] = f.read()
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
    except FileNotFoundError:
        original, mode = None, durable.new_file_mode()
    folder, name = os.path.split(real)
    fd, copy = tempfile.mkstemp(prefix=f".{name}.", suffix=".edit.yaml", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(original or b"")
            os.fchmod(out.fileno(), mode)
        while True:
            try:
                status = _run_editor(argv, copy)
            except _Stopped as stop:  # the edit so far is kept, the queue left alone
                backup = real + queue.REJECTED_SUFFIX
                if os.path.exists(copy):
                    os.replace(copy, backup)
                _say(f"stopped by signal {stop.signum}; {queue_path} left unchanged; the edited text so far "
                     f"is in {backup}")
                return 128 + stop.signum
            if status != 0:
                _say(f"the editor exited with status {status}; {queue_path} left unchanged")
                return 1
            try:
                with open(copy, "rb") as f:
                    edited = f.read()
            except FileNotFoundError:
                _say(f"the edited copy {copy} is gone; {queue_path} left unchanged")
                return 1
            if edited == (original or b""):
                return 0
            try:
                entries = queuetext.check_text(edited, queue_path)
            except UserError as err:
                _say(f"pegpar: {err}")
                if _interactive() and _ask() == "e":
                    continue
                backup = real + queue.REJECTED_SUFFIX
                os.replace(copy, backup)
                shown = queue_path + queue.REJECTED_SUFFIX
                _say(f"{queue_path} left as it was before the edit; the edited text is in "
                     f"{shown if os.path.realpath(shown) == backup else backup}")
                return 2
            with open(copy, "rb+") as f:
                os.fchmod(f.fileno(), mode)  # an editor that saves by renaming may have changed it
                os.fsync(f.fileno())
            os.replace(copy, real)
            _say(f"{queue_path}: saved, {len(entries)} entries")
            return 0
    finally:
        if os.path.exists(copy):
            os.unlink(copy)


def _run_editor(argv: List[str], path: str) -> int:
    # Ctrl-C in the editor reaches this process too; it belongs to the editor.
    # SIGTERM or SIGHUP (the terminal closed) end the edit: the editor is told
    # to stop too, and the caller keeps what it saved so far. The handlers come
    # first: a signal just after the editor starts must not kill pegpar alone
    # (the editor would go on, holding the queue's edit). One that comes while
    # the editor is being started is acted on once it has started.
    started: List[subprocess.Popen] = []
    early: List[int] = []

    def stop(signum: int, frame: object) -> None:
        if not started:
            early.append(signum)
            return
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, handler)
                for sig, handler in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, stop), (signal.SIGHUP, stop))}
    try:
        try:
            proc = subprocess.Popen(argv + [path])
        except OSError as err:
            raise UserError(f"cannot start the editor {argv[0]!r}: {err.strerror}",
                            hint="pass --editor, or set $VISUAL or $EDITOR") from None
        started.append(proc)
        if early:
            raise _Stopped(early[0])
        return proc.wait()
    except _Stopped:
        proc = started[0]
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask() -> str:
    """'e' (edit again) or 'r' (restore the version from before the edit)."""
    while True:
        try:
            answer = click.prompt("[e]dit again or [r]estore the version from before the edit?",
                                  default="e", err=True).strip().lower()
        except (EOFError, click.Abort):
            return "r"
        if answer[:1] in ("e", "r"):
            return answer[:1]


def _say(message: str) -> None:
    click.echo(message, err=True)

