"""The one door to child processes: every program pegpar starts goes through here
(the waves' GNU parallels are forked by the fork server, which starts here:
forkserver.py).

Children start in their own session, so a Ctrl-C at the terminal reaches
pegpar alone and pegpar decides what it means (GNU parallel notes, F8).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Dict, List, Optional, Tuple


def spawn(argv: List[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Start a long-running child in its own session, files it creates private (umask 077)."""
    return subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True, umask=0o077)


def run(argv: List[str], *, timeout: float, env: Optional[Dict[str, str]] = None,
        input_text: Optional[str] = None) -> Tuple[int, str, str]:
    """Run a short child to completion: (exit code, stdout, stderr); 124 on timeout."""
    try:
        p = subprocess.run(argv, env=env, input=input_text, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True,
                           stdin=None if input_text is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:g} s"
    except OSError as e:
        return 127, "", str(e)
    return p.returncode, p.stdout, p.stderr


def interactive(argv: List[str], *, env: Optional[Dict[str, str]] = None) -> int:
    """Run a child on the user's terminal (an editor) and wait for it."""
    return subprocess.call(argv, env=env)


def signal_group(p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal a spawned child's whole session (it is its process group leader)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def raise_open_files() -> None:
    """Each running job keeps its two output files open here, and each GNU
    parallel a few more: raise the soft limit on open files to the hard one
    (many systems start at 1,024, which 500 running jobs would pass)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
