"""Broadcast mode's steps: each queue entry runs once on every sub-node, and
the next entry starts only when every sub-node has finished this one. A
failed step stops the run (unless --ignore-errors); the table at the end says
which sub-node failed which step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

from pegpar import expand
from pegpar.backend import Running
from pegpar.expand import Job
from pegpar.placement import check_names

if TYPE_CHECKING:
    from pegpar.controller import Controller


class Steps:
    def __init__(self, ctl: "Controller"):
        self.ctl = ctl
        self.number = 0  # the step under way (or last run)
        self.jobs: List[Running] = []  # the step's jobs, until all have ended
        self.results: List[Tuple[int, Dict[str, Tuple[int, int]]]] = []  # per step: sub-node -> exit, signal

    def follow(self, jobs: List[Running]) -> None:
        """A step an earlier controller started and whose jobs still run."""
        self.number += 1
        self.results.append((self.number, {}))
        self.jobs = jobs

    def start(self) -> None:
        """Take the next entry and run it on every sub-node."""
        ctl = self.ctl
        placed: List[Running] = []

        def accept(job: Job) -> None:
            check_names(job, ctl.nodes)
            # a step takes the whole sub-node: all its slots
            rendered = [(node, expand.render(job, node, range(node.slots))) for node in ctl.nodes
                        if node.name not in ctl.health.leaving]
            placed.extend(ctl.reserve(job, node, command, tuple(range(node.slots))) for node, command in rendered)

        taken = ctl.take(1, accept, lambda pending: ctl.journal_dispatch(placed, pending),
                         lambda: ctl.journal_untaken(placed))
        placed = placed if taken else []
        if placed:
            self.number += 1
            self.results.append((self.number, {}))
            ctl.launch(placed)
            self.jobs = placed

    def again(self, job: Running) -> None:
        """A failed job of this step runs again on its sub-node (--retries);
        the step waits for it."""
        ctl = self.ctl
        assert job.job is not None
        again = ctl.reserve(job.job, job.node, job.command, job.slots)
        ctl.journal_dispatch([again], again=[job.seq])
        ctl.launch([again])
        self.jobs.append(again)

    def record(self, node: str, exitval: int, signal: int) -> None:
        self.results[-1][1][node] = (exitval, signal)

    def check_done(self, running: set) -> None:
        """Once none of the step's jobs runs: the step's verdict."""
        if self.jobs and not any(j.seq in running for j in self.jobs):
            self._done()

    def _done(self) -> None:
        ctl = self.ctl
        number, results = self.results[-1]
        order = {n.name: i for i, n in enumerate(ctl.nodes)}
        failed = sorted(((name, code) for name, (code, sig) in results.items() if code != 0 or sig != 0),
                        key=lambda f: order.get(f[0], len(order)))  # sub-node order, not finishing order
        if failed:
            what = ", ".join(f"{name} (exit {code})" for name, code in failed)
            ctl.printer.say(f"step {number}: FAILED on {what}")
            if not ctl.opts.ignore_errors:
                ctl.aborted = True
        else:
            ctl.printer.say(f"step {number}: ok on {len(results)}/{len(results)}")
        self.jobs = []

    def table(self) -> List[str]:
        """Every step against every sub-node: ok, exit N, or - (not run there)."""
        names = [n.name for n in self.ctl.nodes]
        rows = []
        for number, results in self.results:
            cells = []
            for name in names:
                code, sig = results.get(name, (None, 0))
                cells.append("-" if code is None else ("ok" if code == 0 and sig == 0 else f"exit {code}"))
            rows.append((str(number), cells))
        widths = [max([len(name)] + [len(cells[i]) for _, cells in rows]) for i, name in enumerate(names)]
        lines = ["  ".join(["step"] + [n.ljust(w) for n, w in zip(names, widths)]).rstrip()]
        for number, cells in rows:
            lines.append("  ".join([number.ljust(4)] + [c.ljust(w) for c, w in zip(cells, widths)]).rstrip())
        return lines
