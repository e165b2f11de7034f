"""The GNU parallels one controller keeps: the waves that run jobs, the open
wave per host and session group that takes a host's next jobs, and, for a
host without an open wave, a ready (warm) parallel that has already paid its
start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from pegpar import backend, runtime
from pegpar.backend import Running, Wave
from pegpar.expand import SubNode

if TYPE_CHECKING:
    from pegpar.controller import Controller

Key = Tuple[str, bool, int]  # host, local, session group


class Waves:
    def __init__(self, ctl: "Controller"):
        self.ctl = ctl
        self.waves: List[Wave] = []
        self.open: Dict[Key, Wave] = {}  # the open wave per host and session group
        self.warm: Dict[Key, backend.Warm] = {}  # parallels ready per host
        self._groups: Tuple[Optional[List[SubNode]], Dict[str, int]] = (None, {})

    def groups(self) -> Dict[str, int]:
        """runtime.session_groups of the sub-nodes, worked out again only when
        their list is replaced (hosts.yaml changed), not at every launch."""
        nodes = self.ctl.nodes
        if self._groups[0] is not nodes:
            self._groups = (nodes, runtime.session_groups(nodes))
        return self._groups[1]

    def warm_up(self) -> None:
        """A ready parallel for every host (and session group)."""
        ctl = self.ctl
        groups = self.groups()
        for node in ctl.nodes:
            k = key(node, groups)
            if k not in self.warm:
                self.warm[k] = backend.Warm(ctl.rt, node, self._slots(k, groups), k[2], ctl.opts.timeout)

    def _slots(self, k: Key, groups: Dict[str, int]) -> int:
        """How many jobs a wave may run at once: the slots of its sub-nodes."""
        return sum(n.slots for n in self.ctl.nodes if key(n, groups) == k)

    def launch(self, placed: List[Running]) -> None:
        """Hand jobs to their hosts' open waves, or to new ones."""
        by_host: Dict[Key, List[Running]] = {}
        groups = self.groups()
        for running in placed:
            by_host.setdefault(key(running.node, groups), []).append(running)
        for k, jobs in by_host.items():
            wave = self.open.get(k)
            if wave is not None and wave.room() >= len(jobs) and wave.extend(self.ctl.rt, jobs):
                continue
            if wave is not None:  # too small now (the hosts file grew) or gone
                self.close(wave)
            self.waves.append(self._start(k, jobs, groups))

    def _start(self, k: Key, jobs: List[Running], groups: Dict[str, int]) -> Wave:
        """Start a wave, in the parallel made ready for this host if there is
        one, and make the next one ready while these jobs run."""
        ctl = self.ctl
        group = k[2]
        slots = self._slots(k, groups)
        # Queue mode keeps the wave open for the host's next jobs; not with
        # --timeout, which parallel applies only while it is not waiting for input.
        keep_open = ctl.opts.mode == "q" and not ctl.opts.timeout
        warm = self.warm.pop(k, None)
        wave = None
        if warm is not None:
            if warm.slots >= max(slots, len(jobs)):
                wave = warm.fill(jobs, keep_open)
            else:  # the hosts file gave this host more sub-nodes
                warm.discard()
        if wave is None:
            wave = backend.start_wave(ctl.rt, jobs, timeout=ctl.opts.timeout, group=group,
                                      slots=slots, keep_open=keep_open)
        if keep_open:
            self.open[k] = wave  # the next parallel is made ready when this one closes
        else:
            self._make_ready(k, jobs[0].node, max(slots, len(jobs)))
        return wave

    def _make_ready(self, k: Key, node: SubNode, slots: int) -> None:
        """A parallel ready for the host's next wave: at most one per host and
        session group, and none while the host has an open wave, which takes
        its next jobs (an idle one costs about 3 MB), and none once the
        queue or input is used up: the run is ending, and a parallel started
        then would only parse its options (a few hundredths of a second of
        CPU) to be discarded.
        A job that comes after all (one run again) starts a wave the
        ordinary way."""
        ctl = self.ctl
        if ctl.stopping or ctl.killing or k in self.warm or k in self.open:
            return
        if not ctl.opts.daemon and not ctl.outcomes.retry and ctl.source.is_empty():
            return
        self.warm[k] = backend.Warm(ctl.rt, node, slots, k[2], ctl.opts.timeout)

    def close(self, wave: Wave) -> None:
        wave.close()
        for k, other in list(self.open.items()):
            if other is wave:
                del self.open[k]
                node = next((job.node for job in wave.jobs if job is not None), None)
                if node is not None and any(n.name == node.name for n in self.ctl.nodes):
                    self._make_ready(k, node, max(wave.slots, self._slots(k, self.groups())))

    def close_open(self) -> None:
        for wave in list(self.open.values()):
            self.close(wave)

    def close_unflushed(self) -> None:
        """An open wave holding ended jobs that got no input since (their
        sub-nodes took no new job) is closed: parallel then records them.
        So is one with no job left running: parallel may have recorded a job
        that ended before it went back to wait for input, and pegpar then
        took its end from the record, with nothing to flush; such a wave
        would otherwise wait for input that does not come."""
        for wave in list(self.open.values()):
            if wave.unflushed or not wave.running:
                self.close(wave)

    def remove(self, wave: Wave) -> None:
        """A wave whose parallel exited and whose jobs are all recorded."""
        self.close(wave)
        wave.cleanup()
        self.waves.remove(wave)

    def terminate(self) -> None:
        for wave in self.waves:
            wave.terminate()

    def discard_warm(self) -> None:
        for warm in self.warm.values():
            warm.discard()
        self.warm.clear()


def key(node: SubNode, groups: Dict[str, int]) -> Key:
    """Which wave a sub-node's jobs go to: its host and its shared connection."""
    return (node.host, node.local, 0 if node.local else groups.get(node.name, 0))
