"""The command line: parse flags, call one function, map errors to exit codes.

Heavy modules (pybars3, the controller) are imported inside the commands so
that `pegpar --help` stays fast.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Optional

import click

from pegpar import __version__
from pegpar.errors import UserError

QUEUE_FILE = "queue.yaml"
HOSTS_FILE = "hosts.yaml"


def _fail(err: UserError) -> None:
    click.echo(f"pegpar: {err}", err=True)
    sys.exit(2)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _Group(click.Group):
    """Turns UserError, and a command line click cannot parse, into one line
    on stderr and exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:  # pegpar's own options
            if isinstance(err, _NO_ARGS_IS_HELP):
                raise  # plain `pegpar`: click shows the help
            click.echo(f"pegpar: {err.format_message()} (see `pegpar --help`)", err=True)
            sys.exit(2)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as err:
            _fail(err)
        except click.UsageError as err:
            where = f"pegpar {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "pegpar"
            click.echo(f"{where}: {err.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)


def _check_hosts_file(hosts_file: str) -> None:
    """A hosts file named with --hosts-file must exist: only a missing default
    hosts.yaml means "the local machine"."""
    from click.core import ParameterSource

    given = click.get_current_context().get_parameter_source("hosts_file") is not ParameterSource.DEFAULT
    if given and not os.path.exists(hosts_file):
        raise UserError("no such hosts file", where=hosts_file,
                        hint=f"without --hosts-file, a missing {HOSTS_FILE} means the local machine")


def _files(f):
    f = click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
                     help="The queue file; its entries leave it as they run.")(f)
    f = click.option("--hosts-file", default=HOSTS_FILE, show_default=True, type=click.Path(),
                     help=f"The hosts. Without this option and without a {HOSTS_FILE} here, jobs run on the "
                          "local machine; a file named with it must exist.")(f)
    return f


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="pegpar")
def main() -> None:
    """Run queues of shell commands over a fleet of machines, on GNU parallel."""


@main.command()
@_files
@click.option("-j", "--jobs", "local_slots", type=click.IntRange(min=1), default=None,
              help="Sub-nodes on the local machine when there is no hosts file (default: CPU cores).")
@click.option("--all", "show_all", is_flag=True, help="List every job even for very large sweeps.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def expand(queue_file: str, hosts_file: str, local_slots: Optional[int], show_all: bool, as_json: bool) -> None:
    """Show the sub-nodes and jobs, without running anything."""
    from pegpar import plan

    _check_hosts_file(hosts_file)
    click.echo(plan.show(queue_file, hosts_file, local_slots or os.cpu_count() or 1,
                         show_all=show_all, as_json=as_json), nl=False)


def _seconds(ctx, param, value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 < value < float("inf"):  # nan fails too
        raise click.BadParameter(f"{value:g} is not a number of seconds above 0")
    return value


def _jobs(ctx, param, value: Optional[str]) -> Optional[int]:
    from pegpar import parallelargs

    if value is None:
        return None
    try:
        return parallelargs.jobs_count(value, os.cpu_count() or 1)
    except UserError as err:
        raise click.BadParameter(err.message) from None


def _run_options(f):
    f = _files(f)
    f = click.option("-d", "--daemon", is_flag=True, help="Keep running and wait for new entries.")(f)
    f = click.option("--ssh-config", type=click.Path(), default=None, help="ssh config file to use.")(f)
    f = click.option("--joblog", "joblog_path", type=click.Path(), default=None,
                     help="GNU parallel joblog to append to (default: .pegpar/joblog next to the queue); for "
                          "input, a joblog as parallel writes it (Seq: the position in the input).")(f)
    f = click.option("-j", "--jobs", "local_slots", default=None, callback=_jobs, metavar="N",
                     help="Sub-nodes on the local machine when there is no hosts file: N, N% of the CPU "
                          "cores, +N or -N cores, 0 for 250 (default: CPU cores).")(f)
    f = click.option("--timeout", type=float, default=None, callback=_seconds,
                     help="Kill a job after this many seconds.")(f)
    f = click.option("--no-logs", is_flag=True, help="Do not keep each job's output under .pegpar/logs.")(f)
    f = click.option("--no-progress", is_flag=True, help="No status line at the bottom of the terminal.")(f)
    f = click.option("--dry-run", is_flag=True, help="Show what would run (like `pegpar expand`) and exit.")(f)
    f = click.option("--retries", type=click.IntRange(min=0), default=0,
                     help="Run a failed job again, up to this many times.")(f)
    f = click.option("--no-requeue-interrupted", is_flag=True,
                     help="Only report jobs a crashed pegpar left unfinished; do not queue them again.")(f)
    f = click.option("--require-all-hosts", is_flag=True,
                     help="Refuse to start when a host cannot be reached.")(f)
    f = click.option("--allow-shared-queue", is_flag=True,
                     help="Run from queue/hosts files that others may write (they could run commands on every node).")(f)
    f = click.option("--connect-timeout", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Seconds before an ssh connection attempt counts as failed.")(f)
    f = click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND...]")(f)
    return f


def _stdin_has_input() -> bool:
    """Commands come on stdin like xargs when stdin is a pipe or a file; a
    terminal or /dev/null (CI, cron) means: use queue.yaml."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _run(mode: str, command, queue_file, hosts_file, daemon, ssh_config, joblog_path, local_slots,
         timeout, no_logs, no_progress, dry_run, retries, no_requeue_interrupted, require_all_hosts,
         allow_shared_queue, connect_timeout, ignore_errors=False, backfill=False, max_load=None,
         memfree=None) -> None:
    if not dry_run:  # perl compiles GNU parallel while the rest of pegpar loads and reads its files
        from pegpar import forkserver, runtime

        forkserver.prestart(runtime.parallel_script())
    from pegpar import admission, controller, meter, output, parallelargs, sources
    from pegpar.queue import check_not_shared, check_queue_file, forget_old_lock

    if joblog_path and not os.path.isdir(os.path.dirname(os.path.abspath(joblog_path))):
        raise UserError("the joblog's directory does not exist", where=joblog_path)
    if ssh_config is not None and not os.path.isfile(ssh_config):  # before the state directory is made
        raise UserError("ssh config file does not exist", where=ssh_config)
    _check_hosts_file(hosts_file)
    check_not_shared(hosts_file, "the hosts file", allow_shared_queue)

    words = list(command)
    spec = None
    if words not in ([], ["-"]):  # GNU parallel's command line
        try:
            spec = parallelargs.parse(words)
        except parallelargs.NoSuchOption as err:
            raise click.NoSuchOption(err.message) from None
        if daemon:
            raise UserError("-d before the command is pegpar's --daemon, which input does not take",
                            hint="GNU parallel's -d DELIM: write it as --delimiter DELIM, or after --")
        dry_run = dry_run or spec.dry_run
        local_slots = parallelargs.jobs_count(spec.jobs, os.cpu_count() or 1) if spec.jobs else local_slots
        if spec.joblog and not os.path.isdir(os.path.dirname(os.path.abspath(spec.joblog))):
            raise UserError("the joblog's directory does not exist", where=spec.joblog)
        joblog_path = spec.joblog or joblog_path
        parallelargs.check_resume(spec, joblog_path)
        timeout = _float_seconds(spec.timeout) if spec.timeout else timeout
        retries = _count("--retries", spec.retries) if spec.retries else retries
        _check_input_files(spec)
    hosts = _sshlogins(spec) if spec is not None and spec.sshlogins else None
    if dry_run:
        from pegpar import plan

        if spec is not None or _stdin_has_input():
            plan.show_input(_input_jobs(spec, joblog_path), hosts_file, local_slots or os.cpu_count() or 1,
                            sys.stdout, hosts)
            return
        click.echo(plan.show(queue_file, hosts_file, local_slots or os.cpu_count() or 1,
                             show_all=False, as_json=False), nl=False)
        return
    opts = controller.Options(mode=mode, queue_file=queue_file, hosts_file=hosts_file,
                              ssh_config=ssh_config, joblog=joblog_path, daemon=daemon,
                              local_slots=local_slots or os.cpu_count() or 1,
                              ignore_errors=ignore_errors, timeout=timeout, keep_logs=not no_logs,
                              retries=retries, requeue_interrupted=not no_requeue_interrupted,
                              require_all_hosts=require_all_hosts, connect_timeout=connect_timeout,
                              progress=not no_progress, allow_shared=allow_shared_queue, backfill=backfill,
                              max_load=max_load, memfree=None if memfree is None else admission.parse_size(memfree))
    if spec is not None or _stdin_has_input():
        opts.daemon = False
        opts.stdin = True
        # the joblog asked for is GNU parallel's: Seq is the job's position in the input;
        # pegpar's own (log, logs, status) stays in its state directory
        opts.joblog, opts.input_joblog = None, joblog_path
        if hosts is not None:
            opts.hosts, opts.hosts_file = hosts, None
        elif os.path.exists(hosts_file):  # a file the user may not think of: said once
            opts.announce = f"jobs run on the sub-nodes of {hosts_file} (-S names others)"
        if spec is not None:
            opts.output = output.Style(spec.output, spec.keep_order, spec.tag, spec.tagstring)
            opts.halt = spec.halt
            opts.meter = spec.meter
        else:
            opts.output = output.Style("group")
        whole = opts.meter in meter.NEEDS_TOTAL or (opts.halt is not None and opts.halt[3])  # as parallel: a total
        source = sources.InputQueue(_input_jobs(spec, joblog_path), whole=whole)
    else:
        from pegpar.queue import QueueFile

        check_queue_file(queue_file, allow_shared_queue)
        forget_old_lock(queue_file)
        if not daemon and not os.path.exists(queue_file) and not _unfinished(queue_file):
            raise UserError("no such queue file: nothing to run", where=queue_file,
                            hint=f"echo '- echo hello' > {queue_file}, or --daemon to wait for one")
        source = QueueFile(queue_file, allow_shared=allow_shared_queue)
    code = controller.run(opts, source)
    # The interpreter's last collection at exit would go over every object
    # pegpar has made (a few hundredths of a second): nothing is left for it to
    # free that exiting does not.
    gc.freeze()
    sys.exit(code)


def _input_jobs(spec, joblog_path: Optional[str]):
    """The jobs of the input: GNU parallel's command line, or (no command)
    each stdin line a command. --resume, --resume-failed: without the jobs the
    joblog has (as succeeded); --retry-failed: the joblog's failed commands."""
    from pegpar import joblog, sources, template

    if spec is None:
        return sources.command_lines(sys.stdin.buffer)
    if spec.reads_stdin and not spec.retry_failed and sys.stdin.isatty():  # as GNU parallel warns
        click.echo("pegpar: reading the input from the terminal: one per line, Ctrl-D to end", err=True)
    template.check_syntax(" ".join(spec.command), sources.Source(sources.STDIN if spec.reads_stdin else
                                                                   sources.ARGS, 1))
    records = joblog.read(joblog_path) if joblog_path and os.path.exists(joblog_path) else []
    if spec.retry_failed:
        return sources.failed_again(records)
    jobs = sources.parallel_jobs(spec, _open_input)
    if spec.resume or spec.resume_failed:
        skip = {r.seq for r in records if spec.resume or r.ok}
        jobs = (job for job in jobs if job.call.seq not in skip)
    return jobs


def _open_input(path: str):
    from pegpar import parallelargs

    return sys.stdin.buffer if path == parallelargs.STDIN else open(path, "rb")


def _sshlogins(spec):
    """-S / --slf: host entries as hosts.yaml would give them, N sub-nodes for `N/host`."""
    from pegpar import parallelargs
    from pegpar.spec import HostEntry, Source

    return tuple(HostEntry((host,), (), Source(path, line))
                 for host, count, path, line in parallelargs.sshlogin_hosts(spec.sshlogins) for _ in range(count))


def _check_input_files(spec) -> None:
    from pegpar import parallelargs

    for kind, path, _ in spec.sources:
        if kind == "file" and path != parallelargs.STDIN and not os.path.isfile(path):
            raise UserError("no such input file", where=path)


def _float_seconds(text: str) -> float:
    try:
        return _seconds(None, None, float(text))  # type: ignore[return-value]
    except (ValueError, click.BadParameter):
        raise UserError(f"--timeout needs a number of seconds above 0, not {text!r}") from None


def _count(option: str, text: str) -> int:
    if not text.isdigit():
        raise UserError(f"option {option} needs a number, not {text!r}")
    return int(text)


def _unfinished(queue_file: str) -> bool:
    """Whether an earlier run of this queue left jobs without an end (a crash):
    the run recovers them, even with the queue file gone."""
    from pegpar.state import StateDir, state_dir_for

    run = StateDir(state_dir_for(queue_file)).last_run()  # a start resets the journal to its own run
    return run is not None and bool(run.unfinished())


@main.command(context_settings={"ignore_unknown_options": True})
@_run_options
@click.option("--max-load", type=click.FloatRange(min=0), default=None,
              help="A host takes no new job while more processes than this run on it (read every 2 s, "
                   "as GNU parallel's --load counts them; default: no limit).")
@click.option("--memfree", default=None, metavar="SIZE",
              help="A host takes no new job while less memory than SIZE (e.g. 2G) is free on it "
                   "(default: no limit).")
@click.option("--backfill", is_flag=True,
              help="While the head job waits for slots, later jobs may start on other free slots; the "
                   "sub-node promised to the head takes none of them (default: strict queue order).")
def q(**kw) -> None:
    """Queue mode: run each job once, on the next free sub-node.

    Jobs come from the queue file, or, when stdin is a pipe or a file, one
    command per input line. `pegpar q -- ARGS` takes GNU parallel's command
    line (`wc -l {}`, `::: a b`, `-a FILE`, -k, --tag, -S 2/node-1, --halt,
    --resume-failed...): see README, "pegpar for GNU parallel users"."""
    _run("q", **kw)


@main.command()
@_run_options
@click.option("-e", "--error-aborts", is_flag=True,
              help="Stop after a step that failed on any sub-node (the default).")
@click.option("-i", "--ignore-errors", is_flag=True, help="Carry on with the next step after a failure.")
def b(error_aborts: bool, ignore_errors: bool, **kw) -> None:
    """Broadcast mode: run each command on every sub-node, all in step."""
    if error_aborts and ignore_errors:
        raise UserError("-e/--error-aborts and -i/--ignore-errors contradict each other")
    _run("b", ignore_errors=ignore_errors, **kw)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--editor", default=None,
              help="Editor command, with its arguments (`code -w`). Default: $VISUAL, $EDITOR, then vi, at a "
                   "terminal; without a terminal, only --editor is used (a script that edits the file).")
def l(queue_file: str, editor: Optional[str]) -> None:
    """Lock mode: edit the queue safely while it runs.

    Holds the queue's lock while the editor runs on a copy (no job is taken
    meanwhile), checks the edited text, and saves it only when it is valid.
    Needs a terminal, or --editor."""
    from pegpar import edit

    sys.exit(edit.edit_queue(queue_file, editor))


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--front", is_flag=True, help="Put the entries at the head of the queue.")
@click.argument("commands", nargs=-1, required=True)
def add(queue_file: str, front: bool, commands) -> None:
    """Add entries to the queue safely (`-`: YAML on stdin)."""
    from pegpar import edit

    if list(commands) == ["-"]:
        sys.exit(edit.add_yaml(queue_file, sys.stdin.read(), front))
    sys.exit(edit.add_commands(queue_file, list(commands), front))


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh in place every second.")
def status(queue_file: str, as_json: bool, watch: bool) -> None:
    """Show sub-nodes, running jobs and counts."""
    from pegpar import status as st

    text = st.status(queue_file, as_json=as_json, watch=watch)
    if text:
        click.echo(text, nl=False)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--kill", is_flag=True, help="Kill running jobs on their nodes too.")
def stop(queue_file: str, kill: bool) -> None:
    """Stop the running pegpar: start no new job."""
    from pegpar import control

    click.echo(control.stop(queue_file, kill), nl=False)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--job", "seq", type=int, default=None, help="Kill the job with this sequence number.")
@click.option("--node", default=None, help="Kill the job(s) running on this sub-node.")
@click.argument("target", required=False, metavar="[SEQ | SUB-NODE]")
def kill(queue_file: str, seq: Optional[int], node: Optional[str], target: Optional[str]) -> None:
    """Kill running jobs: one, a sub-node's, or all.

    SEQ is a job's number as `pegpar log` and `pegpar status` show it; a
    SUB-NODE's name kills what runs there; no target kills every running job
    (as `pegpar stop --kill`)."""
    from pegpar import control

    if target is not None:  # `pegpar kill 12` or `pegpar kill node-1`
        if target.isdigit() and seq is None:
            seq = int(target)
        elif node is None:
            node = target
    if seq is None and node is None:
        click.echo(control.stop(queue_file, True), nl=False)
    else:
        click.echo(control.kill_one(queue_file, seq, node), nl=False)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--joblog", "joblog_path", type=click.Path(), default=None,
              help="Joblog to read (default: .pegpar/joblog next to the queue).")
@click.option("--failed", is_flag=True, help="Only failed jobs.")
@click.option("--running", is_flag=True, help="Only jobs still running.")
@click.option("--node", default=None, help="Only jobs of this sub-node.")
@click.option("--last", is_flag=True, help="Only the last run.")
@click.option("--summary", is_flag=True, help="Per sub-node: jobs, busy time, slots and slot-hours, utilisation.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--tsv", is_flag=True, help="Tab-separated output.")
def log(**kw) -> None:
    """Show the joblog as a table, with filters."""
    from pegpar import logview

    click.echo(logview.log(**kw), nl=False)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--stdout", "out", is_flag=True, help="Only stdout.")
@click.option("--stderr", "err", is_flag=True, help="Only stderr.")
@click.option("--failed", is_flag=True, help="Every job of the last run whose last attempt failed.")
@click.argument("seqs", type=int, nargs=-1, metavar="[SEQ]...")
def logs(queue_file: str, seqs, out: bool, err: bool, failed: bool) -> None:
    """Print jobs' output: stdout, then stderr.

    Several jobs (or --failed) each come under a header naming the job."""
    from pegpar import logview

    if not seqs and not failed:
        raise click.UsageError("name a job (`pegpar logs 12`), several, or --failed")
    which = "out" if out and not err else "err" if err and not out else "both"
    click.echo(logview.several_logs(queue_file, seqs, failed, which), nl=False)


@main.command()
@click.option("--queue-file", default=QUEUE_FILE, show_default=True, type=click.Path(),
              help="The queue file; its state is read from .pegpar/ beside it.")
@click.option("--failed", is_flag=True, help="Put the failed jobs of the last run back (the only kind for now).")
def retry(queue_file: str, failed: bool) -> None:
    """Put the failed jobs of the last run back into the queue.

    `pegpar retry --failed`: each failed job goes back to the top of the
    queue file in the form consumed.yaml keeps."""
    from pegpar import retry as rt

    if not failed:
        raise click.UsageError("say which jobs to put back: `pegpar retry --failed`")
    click.echo(rt.retry_failed(queue_file), nl=False)
