"""What pegpar runs on a node besides jobs: the job guard that keeps a killed
job from starting, the kill of a job with all its children, and the ssh checks
that tell whether a host answers (and open its shared connections)."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from pegpar import proc
from pegpar.expand import SubNode
from pegpar.runtime import Runtime, ssh_wrapper

# Where a node keeps the ids of killed jobs, so that a job whose shell had not
# started when the kill came never runs (KILL_SCRIPT writes them, JOB_GUARD
# reads them), one per user: named by $USER, or the uid where USER is unset.
# On the local machine pegpar names it in PEGPAR_KILLED (runtime.killed_dir:
# the same path), which spares every local job a fork of `id` where USER is
# unset (a service, a container, CI). No braces: parallel reads JOB_GUARD as
# part of its command template.
KILLED_DIR = ('d=$PEGPAR_KILLED; if [ -z "$d" ]; then d=$TMPDIR; [ -n "$d" ] || d=/tmp; u=$USER; '
              '[ -n "$u" ] || u=$(id -u); d=$d/pegpar-killed-$u; fi')

# The job's shell, run as `sh -c JOB_GUARD COMMAND` under its kill mark: a job
# killed before it started exits at once (143, as for SIGTERM); else the command
# replaces it, run by `sh -c` as written.
JOB_GUARD = KILLED_DIR + '; [ -e "$d/$PEGPAR_JOB" ] && exit 143; exec sh -c "$0"'

# The same on an ssh node, where ssh's own failure (the connection lost) also
# exits 255: the guard waits for the command and appends "ID STATUS" to `ends`
# beside the kill marks (moved to ends.old past 1 MB, looked at every 1000th
# job), which the check of a suspect host reads (ENDED). A job whose ssh
# exited 255 without such a line lost its connection before its command
# ended: it runs again; one with a line ran to its end, with that status. A
# kill signals the guard too: it catches the signal (the command gets it as
# usual, a handler not being inherited), so it outlives and reaps the command,
# and exits with its status.
REMOTE_GUARD = KILLED_DIR + (
    '; [ -e "$d/$PEGPAR_JOB" ] && exit 143; trap : TERM INT HUP; sh -c "$0"; s=$?; [ -d "$d" ] || mkdir -p "$d"; '
    'echo "$PEGPAR_JOB $s" 2>/dev/null >> "$d/ends"; '
    'case $PEGPAR_JOB in *000) [ -n "$(find "$d/ends" -size +1024k 2>/dev/null)" ] && mv -f "$d/ends" "$d/ends.old";; '
    'esac; exit $s')

# Prints "ID STATUS" for those of the job ids given as arguments whose command ended.
ENDED = KILLED_DIR + ('; for id in "$@"; do grep -h "^$id " "$d/ends.old" "$d/ends" 2>/dev/null | tail -n 1; done; '
                      'exit 0')

# Run by `sh -c` on a node with the job ids (letters, digits, `-`) as arguments: marks the
# ids killed (files over a day old go), then signals every process whose environment
# carries one of the ids, then KILLs survivors. Marked first: a job that starts after the
# scan sees its mark and does not run; one that started before is found by the scan.
KILL_SCRIPT = KILLED_DIR + r"""
mkdir -p "$d" 2>/dev/null && for id in "$@"; do : > "$d/$id"; done
find "$d" -type f -mmin +1440 -exec rm -f {} + 2>/dev/null
found() {
  set -- $(for id in "$@"; do echo "-e PEGPAR_JOB=$id"; done)
  grep -lzx "$@" /proc/[0-9]*/environ 2>/dev/null | sed -e 's,^/proc/,,' -e 's,/environ$,,'
}
pids=$(found "$@"); [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 20 ]; do
  pids=$(found "$@"); [ -z "$pids" ] && exit 0
  sleep 0.1; i=$((i+1))
done
kill -KILL $pids 2>/dev/null
exit 0
"""


def kill_jobs(rt: Runtime, node: SubNode, seqs: List[int]) -> subprocess.Popen:
    """Start killing jobs on their node (all processes carrying their marks)."""
    ids = [rt.job_id(s) for s in seqs]
    if node.local:
        argv = ["sh", "-c", KILL_SCRIPT, "pegpar-kill"] + ids
    else:
        argv = [rt.ssh, node.host, "sh -c " + shlex.quote(KILL_SCRIPT) + " pegpar-kill " +
                " ".join(shlex.quote(i) for i in ids)]
    return proc.spawn(argv, env=rt.env(), stderr=subprocess.DEVNULL)


class Probe:
    """An ssh check of one host, running in the background. A successful check
    leaves a ControlMaster behind that later jobs share, so jobs starting
    together never race to create one: one master per session group of the
    host (`groups`, see session_groups), the first checked first, the others
    then made MASTERS_AT_ONCE at a time (sshd drops connections beyond its
    MaxStartups, 10 by default). `shared_ok`: a live ControlMaster for the
    host (`ssh -O check`, no round trip) counts as an answer; a master whose
    host died exits within the ServerAlive bound (15 s)."""

    def __init__(self, rt: Runtime, host: str, timeout: float, shared_ok: bool = False, groups: int = 1,
                 ask: Sequence[str] = ()):
        self.rt = rt
        self.host = host
        self.deadline = time.time() + timeout
        self.timeout = timeout
        self._err = tempfile.TemporaryFile()
        self._out = tempfile.TemporaryFile()
        self.checking = shared_ok and not ask
        self.later = list(range(1, groups))  # the other groups' masters, once the host answered
        self.others: List[subprocess.Popen] = []
        self.answered = False  # the first check succeeded: the others' turn
        self.asked = set(ask)  # job ids whose end the check reads (ended)
        command = "sh -c " + shlex.quote(ENDED) + " pegpar-ends " + " ".join(shlex.quote(i) for i in ask) \
            if ask else "true"
        argv = [rt.ssh, "-O", "check", host] if self.checking else [rt.ssh, host, command]
        self.process = proc.spawn(argv, env=rt.env(), stdout=self._out, stderr=self._err)

    def ended(self) -> Dict[str, int]:
        """Once the host answered: the asked ids whose command ran to its end -> its status."""
        self._out.seek(0)
        out = {}
        for line in self._out.read().decode("ascii", "replace").splitlines():
            job, _, status = line.partition(" ")
            if job in self.asked and status.strip().isdigit():
                out[job] = int(status)
        return out

    def result(self) -> Optional[str]:
        """None while running; "" when the host answered; else the reason it failed."""
        if self.answered:
            return self._others()
        code = self.process.poll()
        if code is not None and self.checking:
            self.checking = False
            if code == 0:
                return self._answered()
            self._err.seek(0)
            self._err.truncate()
            self.process = proc.spawn([self.rt.ssh, self.host, "true"], env=self.rt.env(), stderr=self._err)
            return None
        if code is None:
            return self._waiting()
        if code == 0:
            return self._answered()
        return self._reason(code)

    def _answered(self) -> Optional[str]:
        self.answered = True
        self._err.seek(0)
        self._err.truncate()  # what the first check said ("Master running"): not a reason
        return self._others()

    def _others(self) -> Optional[str]:
        """The other groups' masters: "" once all are up."""
        for p in list(self.others):
            code = p.poll()
            if code is None:
                continue
            self.others.remove(p)
            if code != 0:
                self.later.clear()
                return self._reason(code)
        while self.later and len(self.others) < MASTERS_AT_ONCE:
            self.deadline = time.time() + self.timeout  # each connection has its own time to answer
            ssh = ssh_wrapper(self.rt, self.later.pop(0))
            self.others.append(proc.spawn([ssh, self.host, "true"], env=self.rt.env(), stderr=self._err))
        if self.others:
            return self._waiting()
        return ""

    def _waiting(self) -> Optional[str]:
        if time.time() < self.deadline:
            return None
        self.kill()
        return f"no answer within {self.timeout:g} s"

    def kill(self) -> None:
        """Stop the check (nothing more is started)."""
        for p in [self.process] + self.others:
            p.kill()
            p.wait()
        self.others.clear()
        self.later.clear()

    def _reason(self, code: int) -> str:
        self._err.seek(0)
        lines = [x for x in self._err.read().decode("utf-8", "replace").splitlines() if x.strip()]
        for p in self.others:
            p.kill()
            p.wait()
        self.others.clear()
        return lines[-1] if lines else f"ssh exited {code}"


MASTERS_AT_ONCE = 4
# Host checks in flight at once: each is an ssh handshake (some CPU here and on
# the node), and a check must not fail for want of CPU on this machine.
PROBES_AT_ONCE = 16


def probe(rt: Runtime, hosts: List[str], timeout: float, shared_ok: bool = False,
          groups: Optional[Dict[str, int]] = None) -> Dict[str, str]:
    """Check hosts, PROBES_AT_ONCE at a time, each with `timeout` from its own
    start; {host: reason} for those that fail. `groups`: how many session
    groups (shared connections) each host has (default 1)."""
    waiting = list(hosts)
    probes: List[Probe] = []
    failed: Dict[str, str] = {}
    while probes or waiting:
        while waiting and len(probes) < PROBES_AT_ONCE:
            host = waiting.pop(0)
            probes.append(Probe(rt, host, timeout, shared_ok, (groups or {}).get(host, 1)))
        for p in list(probes):
            r = p.result()
            if r is not None:
                probes.remove(p)
                if r:
                    failed[p.host] = r
        time.sleep(0.02)
    return failed
