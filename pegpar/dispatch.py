"""Dispatching, a part of the controller's loop (Controller inherits it): take
jobs from the queue (or input) for the free sub-nodes, place them
(placement.py), journal them at the moment the queue lets go of them, and
hand them to the waves. A queue with an error takes nothing until it changes."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

from pegpar import backend, logview, placement, queuecheck
from pegpar.backend import Running
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job, SubNode
from pegpar.output import Tail, brief

if TYPE_CHECKING:
    from pegpar.queue import Pending


class Dispatching:
    """The controller's dispatch turn; the state it works on is Controller's."""

    def _dispatch(self) -> None:
        full, self.full = self.full, None
        if self.queue_error is not None:
            if self.source.mtime() == self.queue_error_mtime:
                return  # wait until the user changes the file
            self.queue_error = None
        if self.held_back:  # a daemon that started on a bad queue: all of it must be right first
            mtime = self.source.mtime()
            problems = queuecheck.check(self.opts.queue_file, self.nodes, every_node=self.opts.mode == "b")
            if problems:
                self.hold(problems, mtime)
                return
            self.held_back = False
        if self.opts.mode == "b":
            if not self.busy and not self.steps.jobs:
                self.steps.start()
            return
        unavailable = self.health.unavailable()
        # Every sub-node was busy at the last look and none has freed since:
        # nothing to place, whatever the queue holds. A turn with every job
        # running costs no scan of them.
        room = (self.occupancy(), frozenset(unavailable), frozenset(self.health.leaving))
        if room == full:
            self.full = room
            return
        held = self.held()  # new sets: this turn's placements are added to them
        free = placement.free_nodes(self.nodes, held, unavailable, self.health.leaving)
        self.full = None if free else room
        if not free:
            return
        # Nothing changed since a take found no job that fits: do not read the queue again.
        seen = (self.source.mtime(), self.summary.finished + self.released + self.dispatched,
                tuple(sorted(unavailable)), self.health.hosts_mtime, len(self.nodes), len(self.health.leaving))
        if seen == self._fruitless and not self.outcomes.retry:
            return
        placed: List[Running] = []
        idle = list(free)
        waiting: List[Job] = []  # queue jobs that found no room this turn, the head first

        def accept(job: Job) -> None:
            placement.check_names(job, self.nodes)
            reserved = self.reservation
            mine = reserved is not None and reserved[0] == placement.job_key(job)
            candidates = [n for n in idle if mine or reserved is None or n.name != reserved[1]]
            try:
                node, slots, command = placement.place(job, candidates, self.nodes, held,
                                                       self.health.down, self.health.leaving)
            except NotYet:
                waiting.append(job)
                raise
            held.setdefault(node.name, set()).update(slots)
            if len(held[node.name]) >= node.slots:
                idle.remove(node)
            placed.append(self.reserve(job, node, command, slots))

        again: List[int] = []
        while self.outcomes.retry and idle:
            job, seq, _ = self.outcomes.retry[0]
            try:
                accept(job)
            except NotYet:
                break  # it keeps its place in line
            except UserError as err:  # its sub-node is gone and no other renders it
                self.printer.say(f"{err}; job not run: {brief(job.command)}")
                self.summary.not_run += 1
            else:
                again.append(seq)
            self.outcomes.retry.pop(0)
        ready = len(placed)
        self.journal_dispatch(placed, again=again)
        waiting.clear()  # a job waiting to run again does not hold the queue back
        if idle:
            if self.opts.backfill:
                accept = self._backfilling(accept, waiting, held)
            ready += self.take(placement.free_slots(idle, held), accept,
                               lambda pending, start=ready: self.journal_dispatch(placed[start:], pending),
                               lambda start=ready: self.journal_untaken(placed[start:]),
                               skip_waiting=self.opts.backfill)
        head_moved = not waiting or (self.reservation and self.reservation[0] != placement.job_key(waiting[0]))
        if self.opts.backfill and head_moved:
            self.reservation = None  # the head it was promised to has started (or left the queue)
        self._fruitless = seen if not placed and waiting else None
        # only the reservations whose job the queue let go of: the others (an I/O
        # error, the file changed under the pop) were never journalled and stay queued
        self.launch(placed[:ready])

    def _backfilling(self, accept, waiting: List[Job], held):
        """--backfill: the first job that waits (the head) is promised a
        sub-node (placement.target) that no later job may take while it waits;
        later jobs start on whatever else is free (the queue skips the ones
        that wait too)."""
        def backfill(job: Job) -> None:
            try:
                accept(job)
            except NotYet:
                if len(waiting) == 1 and (self.reservation is None or self.reservation[0] != placement.job_key(job)):
                    node = placement.target(job, self.nodes, held, self.health.unavailable(), self.health.leaving)
                    if node is not None:
                        self.reservation = (placement.job_key(job), node.name)
                raise
        return backfill

    def hold(self, problems: Sequence[UserError], mtime: Optional[float] = None) -> None:
        """Take nothing until the whole queue checks clean (--daemon); said once
        for each version of the file."""
        self.held_back = True
        self.queue_error = str(problems[0])
        self.queue_error_mtime = self.source.mtime() if mtime is None else mtime
        for problem in problems[:queuecheck.MAX_LISTED]:
            self.printer.say(f"{problem} (waiting for the queue to be fixed)")

    def take(self, n: int, accept, on_commit, on_abandon, skip_waiting: bool = False) -> int:
        """Take up to n jobs through `accept`; returns how many were taken."""
        mtime = self.source.mtime()
        result = self.source.take(n, accept, on_commit, on_abandon, skip_waiting=skip_waiting)
        if result is None:
            return 0  # the queue is locked (pegpar l, pegpar add): try again next turn
        taken, error = result
        if error is not None and not isinstance(error, NotYet):
            self.queue_error = str(error)
            self.queue_error_mtime = mtime
            if self.opts.stdin and self.dispatched:  # no fix can come: the run ends
                # a line that renders badly is still queued, with the lines read after it; one
                # that does not parse ended the reading; more than READ_AHEAD lines: not all read
                after = self.source.pending() - 1
                rest = f"the {after}" if after >= 0 and self.source.total() is not None else "the input"
                self.printer.say(f"{error}; not run: this line and {rest} after it")
                self.stopping = True
            elif self.opts.daemon:
                self.printer.say(f"{error} (waiting for the queue to be fixed)")
            elif self.dispatched:
                self.printer.say(f"{error} (no new job until it is fixed; pegpar stops with this error once "
                                 "the running jobs have ended)")
        return len(taken)

    def reserve(self, job: Job, node: SubNode, command: str, slots: Tuple[int, ...] = (0,)) -> Running:
        """Give a job its seq, its sub-node and its slots there; `journal_dispatch` records it."""
        seq = self.next_seq
        self.next_seq += 1
        stem = os.path.join(self.rt.logs_dir, backend.log_name(seq, node))
        return Running(seq, node, command, stem, stem + ".err", time.time(), job, tuple(slots))

    def occupancy(self) -> tuple:
        """Changes whenever a job takes or leaves a sub-node's slots, or the
        sub-nodes change: a job enters `busy` only by a dispatch (counted) and
        leaves it only by ending. The list of sub-nodes itself is in it, so a
        new list is never taken for the old one."""
        return len(self.busy), self.dispatched, self.nodes, len(self.nodes)

    def held(self) -> Dict[str, Set[int]]:
        """Sub-node name -> the slot indices its running jobs hold (new sets)."""
        return placement.held_slots((j.node.name, j.slots) for j in self.busy.values())

    def journal_dispatch(self, placed: List[Running], pending: Optional[Pending] = None,
                         again: Sequence[int] = ()) -> None:
        """Journal jobs at the moment the queue lets go of them (called by the
        queue just before it replaces its file): a crash before leaves them
        queued and out of the journal, a crash after finds them in the journal.
        `pending`: the queue's new file until it replaces the old one (a crash
        in between leaves it, and recovery knows the jobs are still queued) and
        the part of consumed.yaml written for them (recovery takes it out).
        `again`: failed attempts these jobs run again (see Outcomes.requeue).
        Synced for a queue file, whose entries are gone once it is replaced; not
        for input (stdin, `:::`), which no file keeps: what survives a power cut
        there is the journal as the system wrote it, and a crash of pegpar alone
        loses nothing of it."""
        self.state.journal_append([self.outcomes.again_mark(seq) for seq in again] + [
            {"event": "dispatch", "run": self.run_id, "seq": r.seq, "node": r.node.name, "host": r.node.host,
             "command": r.command, "slots": list(r.slots), "source": str(r.job.source) if r.job else "",
             "canonical": None if self.opts.stdin or r.job is None else r.job.canonical(), "start": r.started,
             **({"pending": pending.file, "consumed": [pending.consumed, pending.start, pending.end]}
                if pending else {})}
            for r in placed], sync=not self.opts.stdin)

    def journal_untaken(self, placed: List[Running]) -> None:
        """Jobs journalled while the queue file was saved behind the lock's
        back: the pop is abandoned and they stay queued (recovery, status and
        retry then ignore their dispatch records)."""
        self.state.journal_append([{"event": "untaken", "run": self.run_id, "seq": r.seq} for r in placed])

    def launch(self, placed: List[Running]) -> None:
        """The jobs are running from now on: their sub-nodes busy, their output followed."""
        slotted = "".join(logview.slots_line(r.seq, r.node.name, r.slots, r.node.slots)
                          for r in placed if r.node.slots > 1)
        if slotted:  # for `pegpar log --summary`: the joblog has no column for it
            with open(os.path.join(self.state.path, logview.SLOTS_FILE), "a", encoding="utf-8") as f:
                f.write(slotted)
        if placed:
            self.rt.note_seq(max(r.seq for r in placed))
        if placed and not self.dispatched and self.opts.announce:
            self.printer.say(self.opts.announce)
        for running in placed:
            self.busy[running.seq] = running
            self.live[running.seq] = running
            self.tails[running.seq] = (Tail(running.out_path), Tail(running.err_path))
            self.dispatched += 1
            if self.meter is not None:
                call = running.job.call if running.job is not None else None
                self.meter.job_started(running.node.host, call.args if call is not None else ())
        self.waves.launch(placed)
