"""`pegpar stop` and `pegpar kill`: steer the controller running on a queue.

A stop is a signal to the controller's pid (SIGUSR1: no new jobs, running
jobs finish; SIGUSR2: kill the running jobs and exit). Killing one job is a
request file the controller picks up within a second: it kills that job on its
node, children included, and carries on with the queue.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, Dict, List, Optional

from pegpar.errors import UserError
from pegpar.state import StateDir, state_dir_for


def _live(queue_file: str) -> "tuple[StateDir, Dict[str, Any]]":

    state = StateDir(state_dir_for(queue_file))
    ctl = state.controller()
    if ctl is None:
        raise UserError(f"no pegpar is running on {queue_file}")
    return state, ctl


def stop(queue_file: str, kill: bool) -> str:
    """`pegpar stop [--kill]`: signal the live controller of this queue."""
    _, ctl = _live(queue_file)
    pid = ctl.get("pid")
    host = ctl.get("hostname")
    if host and host != socket.gethostname():
        raise UserError(f"the pegpar running on {queue_file} is on {host} (pid {pid})",
                        hint=f"run `pegpar stop` on {host}")
    try:
        os.kill(int(pid), signal.SIGUSR2 if kill else signal.SIGUSR1)
    except ProcessLookupError:
        raise UserError(f"no pegpar is running on {queue_file}") from None
    except PermissionError:
        raise UserError(f"pegpar (pid {pid}) on {queue_file} belongs to another user") from None
    if kill:
        return f"pegpar (pid {pid}) is killing its running jobs and exiting\n"
    return f"pegpar (pid {pid}) starts no new job and exits when the running ones finish\n"


def kill_one(queue_file: str, seq: Optional[int], node: Optional[str]) -> str:
    """`pegpar kill SEQ` / `pegpar kill --node NAME`: kill one running job
    (on its node, children included); the controller carries on."""
    if (seq is None) == (node is None):
        raise UserError("name the job to kill: its number, or --node with its sub-node")
    state, ctl = _live(queue_file)
    running = _running(state, ctl)
    if running is not None:  # None: the journal does not know yet; let the controller judge
        if seq is not None:
            match = [d for d in running if d.get("seq") == seq]
            if not match:
                raise UserError(f"job #{seq} is not running on {queue_file}", hint=_listing(running))
        else:
            match = [d for d in running if d.get("node") == node]
            if not match:
                prefixed = [d for d in running if str(d.get("node", "")).startswith(node)]
                if len(prefixed) != 1:
                    what = "matches several" if prefixed else "runs no job"
                    raise UserError(f"sub-node `{node}` {what} on {queue_file}",
                                    hint=_listing(prefixed or running))
                match = prefixed
            node = match[0].get("node")
        seq = match[0].get("seq")
    state.request({"kill": {"seq": seq}} if seq is not None else {"kill": {"node": node}})
    what = f"the job on {node}" if seq is None else f"job #{seq}" + (f" on {node}" if node else "")
    return f"asked pegpar (pid {ctl.get('pid')}) to kill {what}\n"


def _running(state: StateDir, ctl: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """The live run's jobs without a result, per the journal."""
    run = state.last_run()
    if run is None or (ctl.get("run") is not None and run.id != ctl.get("run")):
        return None
    return run.unfinished()


def _listing(running: List[Dict[str, Any]]) -> str:
    if not running:
        return "no job is running"
    return "running: " + ", ".join(f"#{d.get('seq')} on {d.get('node')}" for d in running)
