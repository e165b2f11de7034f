"""What becomes of a job that ended: its record in the joblog and the
journal, its output's last lines, and then ok, failed, run again (--retries),
or put back in the queue because its host died. A job waiting to run again
when the run ends is never dropped unsaid."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from pegpar import halt, joblog
from pegpar.backend import Running
from pegpar.expand import Job
from pegpar.output import Tail, brief
from pegpar.report import Failure

if TYPE_CHECKING:
    from pegpar.controller import Controller

WAITING_BACK = "pegpar put back jobs waiting to run again: "  # the comment above them, at the end of a stopped run


class Outcomes:
    def __init__(self, ctl: "Controller"):
        self.ctl = ctl
        # jobs to run again before taking from the queue, each with the seq of its
        # failed attempt (marked "again" in the journal once the job runs again)
        # and, for --retries, that attempt's failure (counted if it never does)
        self.retry: List[Tuple[Job, int, Optional[Failure]]] = []
        self.attempts: Dict[Tuple, int] = {}
        self.last_status = 0  # of the job recorded last, as a shell gives it (a signal: 128 + N)

    def finished(self, job: Running, rec: Optional[joblog.Record]) -> None:
        ctl = self.ctl
        out, err = ctl.tails.pop(job.seq)
        print_output(ctl, job, out, err, final=True)
        if rec is None:  # parallel recorded nothing: killed (F8) or parallel itself failed
            now = time.time()
            rec = joblog.Record(0, job.node.host, job.started, now - job.started, 0, 0, -1,
                                signal.SIGTERM if ctl.killing else 0, job.command)
        if ctl.killing and not rec.ok:
            ctl.summary.killed += 1
        self.last_status = rec.exitval if rec.exitval or not rec.signal else 128 + rec.signal
        rec = joblog.relabel(rec, job.seq, job.node.name, job.command)
        joblog.append(ctl.joblog_path, [rec])
        if ctl.opts.input_joblog and job.job is not None:  # every attempt of a job under its one Seq
            position = job.job.call.seq if job.job.call is not None else job.job.source.line
            joblog.append(ctl.opts.input_joblog, [dataclasses.replace(rec, seq=position)])
        # not synced: recovery also checks the joblog, and a job whose end is lost
        # to a power cut is reported as interrupted, never lost
        ctl.state.journal_append([{"event": "done", "run": ctl.run_id, "seq": job.seq,
                               "exitval": rec.exitval, "signal": rec.signal}], sync=False)
        ctl.live.pop(job.seq, None)
        if ctl.meter is not None:
            ctl.meter.job_ended(job.node.host)
        if ctl.busy.get(job.seq) is job:
            del ctl.busy[job.seq]
        if job.node.name in ctl.health.leaving and ctl.opts.mode == "q" and job.node.name not in ctl.held():
            ctl.nodes = [n for n in ctl.nodes if n.name != job.node.name]
        if ctl.opts.mode == "b":
            ctl.steps.record(job.node.name, rec.exitval, rec.signal)
        if not ctl.opts.keep_logs:
            for path in (job.out_path, job.err_path):
                unlink(path)
        unlink(job.out_path + ".seq")
        if rec.ok:
            ctl.summary.done += 1
            return
        reason = err.last_line if rec.exitval == 255 else ""
        if ctl.opts.timeout and rec.signal and rec.runtime >= ctl.opts.timeout and not ctl.killing:
            reason = f"timed out after {ctl.opts.timeout:g} s"
            # parallel killed the job's ssh client (or its local process); with a
            # shared ssh connection the job itself goes on running on its node
            ctl.kill_jobs([job])
        # 255: ssh's own failure; 129..254: killed by a signal, as the processes of a
        # node that goes down are (the exit status may get out before the connection dies)
        if rec.exitval > 128 and self._may_die_with_its_host(job):
            if job.node.host in ctl.health.down:
                self.put_back_from_down(job, reason)
            else:
                ctl.health.suspect(job, rec, reason)
            return
        self.failed(job, rec, reason)

    def check_halt(self) -> None:
        """--halt, as GNU parallel's: once N jobs (N % of all) failed
        (succeeded, ended), no new job starts (soon) or the running ones are
        killed too (now), with parallel's exit status (halt.py)."""
        ctl = self.ctl
        if ctl.opts.halt is None or ctl.halted is not None:
            return
        when, what, n, percent = ctl.opts.halt
        s = ctl.summary
        job_status = s.failed[-1].exitval if what == "fail" and s.failed else self.last_status
        status = halt.reached(ctl.opts.halt, len(s.failed), s.finished, ctl.source.total() if percent else None,
                              job_status)
        if status is None:
            return
        ctl.halted = status
        count = halt.limit(what, len(s.failed), s.finished)
        ended = {"fail": "failed", "success": "succeeded", "done": "ended"}[what]
        ctl.printer.say(f"--halt {when},{what}={n}{'%' if percent else ''}: {count} job(s) {ended}")
        if when == "now":
            ctl.kill()
        else:
            ctl.stop(why="--halt")

    def failed(self, job: Running, rec: joblog.Record, reason: str) -> None:
        ctl = self.ctl
        ctl.summary.failed.append(Failure(job.seq, job.node.name, job.command,
                                      rec.exitval, rec.signal, reason))
        if ctl.opts.retries and not ctl.stopping and job.job is not None and not ctl.aborted:
            # queue mode: the job again, on the next free sub-node; broadcast: the
            # step's job again on the same sub-node, and the step waits for it
            key = (job.job.command, job.job.params, str(job.job.source),
                   job.node.name if ctl.opts.mode == "b" else "", ctl.steps.number)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] <= ctl.opts.retries:
                ctl.printer.say(f"job #{job.seq} failed on {job.node.name}; retrying "
                            f"({self.attempts[key]}/{ctl.opts.retries})")
                failure = ctl.summary.failed.pop()
                if ctl.opts.mode == "q":
                    self.retry.append((job.job, job.seq, failure))
                else:
                    ctl.steps.again(job)

    def _may_die_with_its_host(self, job: Running) -> bool:
        """A remote queue job that ended with ssh's failure (255) or by a
        signal may have died with its host: if the host no longer answers, it
        goes down and the job runs again elsewhere."""
        ctl = self.ctl
        return not (job.node.local or ctl.killing or job.job is None or ctl.opts.mode != "q")

    def ended_unreported(self, job: Running, rec: joblog.Record, status: int) -> None:
        """A job whose command ran to its end on its node, whose ssh connection
        broke before ssh reported it: it counts with the status it ended with
        (the joblog keeps ssh's 255), and does not run again."""
        ctl = self.ctl
        ctl.printer.say(f"job #{job.seq} ended with status {status} on {job.node.host}; its connection broke "
                        "before ssh reported it")
        if status == 0:
            ctl.summary.done += 1
        else:
            self.failed(job, rec, f"exit {status}; the connection broke before ssh reported it")

    def put_back_lost(self, job: Running, reason: str) -> None:
        """A job whose ssh connection died (255 not of its command's making)
        while its host still answers: killed there, in case it runs on, and
        back to the queue."""
        ctl = self.ctl
        assert job.job is not None
        ctl.printer.say(f"job #{job.seq} lost its connection to {job.node.host} ({reason or 'ssh exited 255'}); "
                        "it goes back to the queue")
        ctl.kill_jobs([job])
        ctl.state.journal_append(self.requeue(job.job, job.seq), sync=False)
        ctl.summary.reconnected += 1

    def put_back_from_down(self, job: Running, reason: str) -> None:
        ctl = self.ctl
        assert job.job is not None
        host = job.node.host
        ctl.printer.say(f"host {host} is down ({reason or ctl.health.down[host]}); job #{job.seq} "
                    "goes back to the queue")
        ctl.health.left_behind.setdefault(host, []).append(job.seq)
        ctl.state.journal_append([{"event": "left", "run": ctl.run_id, "seq": job.seq, "host": host}]
                             + self.requeue(job.job, job.seq), sync=False)
        ctl.summary.requeued += 1

    def requeue(self, job: Job, seq: int) -> List[dict]:
        """Queue a failed job again (its attempt #seq); returns the journal's
        "again" mark when it is back in the queue file (a crash then leaves it
        queued). A job kept in memory is marked when it runs again: until then
        a crash leaves a failure `retry --failed` finds, never nothing."""
        ctl = self.ctl
        if not ctl.opts.stdin and ctl.opts.mode == "q":
            try:
                ctl.source.add([job.canonical()], front=True, timeout=2)
                return [self.again_mark(seq)]
            except Exception:  # the lock is held too long: keep it in memory, it still runs
                pass
        self.retry.append((job, seq, None))
        return []

    def again_mark(self, seq: int) -> dict:
        """The journal's mark of a failed job run again: its last attempt counts (status, retry)."""
        return {"event": "again", "run": self.ctl.run_id, "seq": seq}

    def settle_unrun(self) -> None:
        """The run ends (stopped, or no host left) before jobs waiting to run
        again, or input lines, got a sub-node: none is dropped unsaid. A
        --retries job counts as the failure it was; a queue job goes back to
        the top of the queue file; an input line is named as not run."""
        ctl = self.ctl
        waiting, self.retry = self.retry, []
        ctl.summary.failed += [failure for _, _, failure in waiting if failure is not None]
        if waiting and not ctl.opts.stdin:
            seqs = [seq for _, seq, _ in waiting]
            try:
                ctl.source.add([job.canonical() for job, _, _ in waiting], front=True, timeout=10,
                           note=WAITING_BACK + "".join(f"#{seq} " for seq in seqs) + f"(run {ctl.run_id})")
            except Exception as err:  # the lock held too long, or the file cannot be written
                for job, _, _ in waiting:
                    ctl.printer.say(f"not run again ({err}): {brief(job.command)}")
                ctl.summary.not_run += len(waiting)
            else:
                ctl.state.journal_append([self.again_mark(seq) for seq in seqs], sync=False)
                ctl.printer.say(f"{len(waiting)} job(s) waiting to run again put back at the top of "
                            f"{ctl.opts.queue_file}: " + ", ".join(f"#{seq}" for seq in seqs))
            return
        for job, _, failure in waiting:
            if failure is None:
                why = "--halt" if ctl.halted is not None else "pegpar stopped first"
                ctl.printer.say(f"not run again ({why}): {brief(job.command)}")
                ctl.summary.not_run += 1
        unread = ctl.source.pending() if ctl.opts.stdin and ctl.queue_error is None else 0
        if unread:
            why = "--halt" if ctl.halted is not None else "pegpar stopped first"
            ctl.printer.say(f"{unread} input line(s) read and not run ({why})")
            ctl.summary.not_run += unread


def print_output(ctl, job: Running, out: Tail, err: Tail, final: bool) -> None:
    """What a running job wrote since the last call, as the run prints it."""
    printer = ctl.printer
    if printer.style.mode == "prefix":
        printer.job_lines(job.node.name, out.lines(final))
        printer.job_lines(job.node.name, err.lines(final), printer.err)
        return
    call = job.job.call if job.job is not None else None
    position = job.job.source.line if job.job is not None else 0
    printer.job_output(position, lambda: _tag(printer.style, call, job), out, err, final)


def _tag(style, call, job: Running) -> str:
    """--tag: the job's arguments; --tagstring: its replacement strings filled (unquoted)."""
    args = call.args if call is not None else (job.command,)
    if style.tagstring is None:
        return " ".join(args)
    from pegpar import replacement

    tag = replacement.compile_command((style.tagstring,), quote_words=False)
    return tag.line(args, call.seq if call else job.seq, str(job.node.slot), append=False, quoting=str)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
