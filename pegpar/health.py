"""The hosts' health, as one controller sees it.

A host is *up*, *down* (it did not answer; asked again every PROBE_EVERY
seconds), or *suspect* (a job on it ended as if the host died: its sub-nodes
wait while the host is asked, and the answer decides whether the job failed
or goes back to the queue). A sub-node removed from hosts.yaml while it runs
a job is *leaving*: the job finishes, nothing new starts there. hosts.yaml is
read again when it changes. Jobs put back from a host that was cut off may
still run there (*left behind*): they are killed once the host answers,
by this run or a later one (the journal's `left` marks).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from pegpar import expand, joblog, remote, runtime, spec
from pegpar.backend import Running
from pegpar.errors import UserError
from pegpar.expand import SubNode

if TYPE_CHECKING:
    from pegpar.controller import Controller, Options

PROBE_EVERY = 3.0  # seconds between checks of a down host


class Health:
    def __init__(self, ctl: "Controller"):
        self.ctl = ctl
        self.down: Dict[str, str] = {}  # host -> why
        self.probes: Dict[str, remote.Probe] = {}
        self.next_probe: Dict[str, float] = {}
        # hosts being asked whether they still answer, with the jobs that wait for the answer
        self.suspects: Dict[str, Tuple[remote.Probe, List[Tuple[Running, joblog.Record, str]]]] = {}
        # host -> seqs of jobs put back from it while it was down: what is left of
        # them there is killed when it answers again, by this run or a later one
        self.left_behind: Dict[str, List[int]] = {}
        self.carried: List[dict] = []  # an earlier run's "left" records this run takes over
        self.leaving: Set[str] = set()  # sub-node names removed from the hosts file
        self.hosts_mtime = mtime(ctl.opts.hosts_file)
        self.hosts_error: Optional[str] = None

    def unavailable(self) -> Set[str]:
        """Hosts that take no job now: down, being asked about, or held back by their load."""
        return set(self.down) | set(self.suspects) | set(self.ctl.admission.held)

    def mark_down(self, host: str, why: str) -> None:
        self.down[host] = why
        self.next_probe[host] = time.time() + PROBE_EVERY

    def check(self, nodes: List[SubNode], at_start: bool, every: Optional[List[SubNode]] = None) -> None:
        """Check the hosts of `nodes` (of `every` sub-node there will be: how
        many shared connections each host needs) and start their connections."""
        ctl = self.ctl
        hosts = sorted({n.host for n in nodes if not n.local})
        groups = runtime.group_counts(every or nodes)
        # a live shared connection answers for its host (a check without a round trip)
        failed = remote.probe(ctl.rt, hosts, ctl.opts.connect_timeout + 1, shared_ok=True,
                              groups=groups) if hosts else {}
        for host, why in failed.items():
            ctl.printer.say(f"host {host} left out: {why}")
        if failed and ctl.opts.require_all_hosts and at_start:
            raise UserError(f"{len(failed)} host(s) unreachable and --require-all-hosts is set",
                            where=ctl.opts.hosts_file)
        for host, why in failed.items():  # keep them, down: they are probed again later
            self.mark_down(host, why)

    # -- jobs left behind on hosts that were cut off -------------------------
    def take_over_left(self, records: List[dict]) -> None:
        """Jobs an earlier run put back from a host that was down and never saw
        answer again: their first copies may still run there. Killed once that
        host answers (Controller.start, probe_down); a host no longer in the
        hosts file is only named."""
        killed = {r["seq"] for r in records if r.get("event") == "left-killed"}
        left = {r["seq"]: r for r in records if r.get("event") == "left" and r["seq"] not in killed}
        hosts = {n.host for n in self.ctl.nodes if not n.local}
        for seq, r in sorted(left.items()):
            if r.get("host") in hosts:
                self.left_behind.setdefault(r["host"], []).append(seq)
                self.carried.append(r)
            else:
                self.ctl.printer.say(f"job #{seq} ran again elsewhere and may still run on {r.get('host')}, "
                                     "which is no longer in the hosts file: pegpar cannot kill it there")

    def kill_left(self, host: str) -> None:
        """The host answers again: kill what is left there of jobs run again elsewhere."""
        ctl = self.ctl
        seqs = self.left_behind.pop(host, [])
        node = next((n for n in ctl.nodes if n.host == host and not n.local), None)
        if not seqs or node is None:
            return
        ctl.printer.say(f"killing what is left on {host} of job(s) run again elsewhere: "
                        + ", ".join(f"#{seq}" for seq in seqs))
        ctl.killers.append(remote.kill_jobs(ctl.rt, node, seqs))
        ctl.state.journal_append([{"event": "left-killed", "run": ctl.run_id, "seq": seq} for seq in seqs],
                                 sync=False)

    # -- hosts.yaml ------------------------------------------------------
    def reload_hosts(self) -> None:
        """Every turn: a stat of hosts.yaml; read again only when it changed."""
        ctl = self.ctl
        if ctl.opts.hosts_file is None:
            return
        now = mtime(ctl.opts.hosts_file)
        if now == self.hosts_mtime:
            return
        self.hosts_mtime = now
        if now == 0.0:
            # Gone since the last look (deleted, or an editor that moves the old
            # file aside before writing the new one): "no hosts file" would mean
            # the local machine, and the fleet's jobs would run here.
            ctl.printer.say(f"{ctl.opts.hosts_file} is missing (keeping the previous sub-nodes)")
            return
        from pegpar.queue import check_not_shared

        try:
            check_not_shared(ctl.opts.hosts_file, "the hosts file", ctl.opts.allow_shared)
            fresh = load_nodes(ctl.opts)
        except UserError as err:
            if str(err) != self.hosts_error:
                ctl.printer.say(f"{err} (keeping the previous sub-nodes)")
            self.hosts_error = str(err)
            return
        self.hosts_error = None
        old = {n.name for n in ctl.nodes}
        new = {n.name for n in fresh}
        added = [n for n in fresh if n.name not in old]
        removed = [n for n in ctl.nodes if n.name not in new]
        newly_removed = [n for n in removed if n.name not in self.leaving]
        if added:
            ctl.printer.say("sub-nodes added: " + ", ".join(n.name for n in added))
            ctl.queue_error = None  # the head entry may render on them
            self.check(added, at_start=False, every=fresh)
        if newly_removed:
            ctl.printer.say("sub-nodes removed (running jobs finish): "
                            + ", ".join(n.name for n in newly_removed))
        self.leaving = {n.name for n in removed}
        held = ctl.held()
        ctl.nodes = fresh + [n for n in removed if n.name in held]

    # -- down hosts --------------------------------------------------------
    def probe_down(self) -> None:
        ctl = self.ctl
        now = time.time()
        for host in list(self.down):
            probe = self.probes.get(host)
            if probe is None:
                if now >= self.next_probe.get(host, 0):
                    self.probes[host] = remote.Probe(ctl.rt, host, ctl.opts.connect_timeout + 1,
                                                     groups=runtime.group_counts(ctl.nodes).get(host, 1))
                continue
            result = probe.result()
            if result is None:
                continue
            del self.probes[host]
            if result == "":
                del self.down[host]
                ctl.printer.say(f"host {host} is back in service")
                ctl.queue_error = None  # a head entry only its sub-nodes render may run now
                self.kill_left(host)  # the host was cut off, not dead: their copies ran elsewhere
            else:
                self.mark_down(host, result)

    # -- suspect hosts -----------------------------------------------------
    def suspect(self, job: Running, rec: joblog.Record, reason: str) -> None:
        """A job ended as if its host died: is the host still there? Asked in
        the background; its sub-nodes wait for the answer."""
        host = job.node.host
        if host in self.suspects:
            self.suspects[host][1].append((job, rec, reason))  # asked about by the next check
        else:
            self.suspects[host] = (self._probe(host, [job]), [(job, rec, reason)])

    def _probe(self, host: str, jobs: List[Running]) -> remote.Probe:
        """Does the host answer, and which of these jobs' commands ran to their end (with what status)?"""
        return remote.Probe(self.ctl.rt, host, self.ctl.opts.connect_timeout + 1,
                            ask=[self.ctl.rt.job_id(job.seq) for job in jobs])

    def check_suspects(self) -> None:
        """The answers about hosts whose jobs ended as if the host died."""
        for host, (probe, jobs) in list(self.suspects.items()):
            why = probe.result()
            if why is None:
                continue
            del self.suspects[host]
            if why:
                self.mark_down(host, why)
            ended = {} if why else probe.ended()
            unasked = []
            for job, rec, reason in jobs:
                job_id = self.ctl.rt.job_id(job.seq)
                if why:
                    self.ctl.outcomes.put_back_from_down(job, reason)
                elif rec.exitval != 255 or ended.get(job_id) == 255:
                    self.ctl.outcomes.failed(job, rec, reason)  # the host answers: the job itself failed
                elif job_id in ended:  # it ran to its end; only ssh's report of it was lost
                    self.ctl.outcomes.ended_unreported(job, rec, ended[job_id])
                elif job_id in probe.asked:
                    self.ctl.outcomes.put_back_lost(job, reason)  # its connection died, not its command
                else:
                    unasked.append((job, rec, reason))
            if unasked:
                self.suspects[host] = (self._probe(host, [job for job, _, _ in unasked]), unasked)

    def settle_suspects(self) -> None:
        """pegpar is killed while hosts are still being asked about: their jobs
        go back to the queue unasked (the safe side: one may run twice, none is lost)."""
        for host, (probe, jobs) in list(self.suspects.items()):
            probe.kill()
            self.down.setdefault(host, "not checked: pegpar was stopping")
            for job, _, reason in jobs:
                self.ctl.outcomes.put_back_from_down(job, reason)
        self.suspects.clear()


def load_nodes(opts: "Options") -> List[SubNode]:
    """The sub-nodes hosts.yaml names (without one, the local machine's), or
    those named on the command line (-S)."""
    entries = opts.hosts if opts.hosts is not None else spec.load_hosts(opts.hosts_file)
    return list(expand.subnodes(entries, opts.local_slots))


def mtime(path: Optional[str]) -> float:
    """When the file last changed, its permissions included (ctime)."""
    try:
        return os.stat(path).st_ctime if path else 0.0
    except OSError:
        return 0.0
