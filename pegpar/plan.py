"""`pegpar expand`: the sub-nodes and jobs the files expand to, as text or JSON.

Everything is validated as a run would validate it (both files, name
collisions, every command template against every sub-node's variables) and
the first problem is raised as a UserError. Jobs are listed lazily, up to
JOB_LIMIT unless show_all: a sweep of a billion combinations is counted, not
enumerated. Commands are shown as templates: which sub-node renders a job is
decided only when it runs.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Dict, List, Optional, Tuple

from pegpar import expand, placement, spec, template
from pegpar.expand import Job, SubNode

JOB_LIMIT = 1000
RENDER_BUDGET = 20_000  # renders of listed jobs on sub-nodes, on top of the static check of every entry


def show(queue_file: str, hosts_file: str, local_slots: int, *, show_all: bool, as_json: bool) -> str:
    """The whole output of `pegpar expand` (ends with a newline)."""
    host_entries = spec.load_hosts(hosts_file)
    nodes = expand.subnodes(host_entries, local_slots)
    entries = spec.load_queue(queue_file)
    _check(entries, nodes)
    placement.check_slots(entries, nodes)
    total = sum(expand.count(entry.dims) for entry in entries)
    all_jobs = itertools.chain.from_iterable(expand.jobs(entry) for entry in entries)
    listed = list(all_jobs if show_all else itertools.islice(all_jobs, JOB_LIMIT))
    _try_renders(listed, nodes)
    if as_json:
        return _json(nodes, listed, total)
    return _text(nodes, listed, total, queue_file, hosts_file if host_entries is not None else None)


def _check(entries: Tuple[spec.QueueEntry, ...], nodes: Tuple[SubNode, ...]) -> None:
    """Collisions, and each command template against each distinct set of sub-node variable names."""
    name_sets = {frozenset(node.variables()) | frozenset(expand.RUN_VARIABLES) for node in nodes}
    for entry in entries:
        expand.check_collisions(entry, nodes)
        names = {name for name, _ in entry.params}
        for command in dict.fromkeys(entry.commands):
            for host_names in sorted(name_sets, key=sorted):
                template.check(command, names | host_names, entry.source)


def _try_renders(jobs: List[Job], nodes: Tuple[SubNode, ...]) -> None:
    """Render the listed jobs for real, which finds what depends on values (a
    comparison of a text with a number, say)."""
    pairs = ((job, node) for job in jobs if template.is_template(job.command) for node in nodes)
    for job, node in itertools.islice(pairs, RENDER_BUDGET):
        expand.render(job, node)


def _json(nodes: Tuple[SubNode, ...], jobs: List[Job], total: int) -> str:
    doc: Dict[str, Any] = {
        "subnodes": [{"name": n.name, "host": n.host, "params": dict(n.params), "local": n.local, "slots": n.slots}
                     for n in nodes],
        "jobs": [{"command": j.command, "params": dict(j.params), "source": str(j.source), "slots": j.slots,
                  "allocation_policy": j.policy} for j in jobs],
        "count": total,
        "truncated": len(jobs) < total,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _text(nodes: Tuple[SubNode, ...], jobs: List[Job], total: int, queue_file: str,
          hosts_file: Optional[str]) -> str:
    lines = [f"{_plural(len(nodes), 'sub-node')}" + (f" from {hosts_file}" if hosts_file else
                                                      " on this machine (no hosts file)")]
    if hosts_file is None:
        lines.append(f"  {nodes[0].name} .. {nodes[-1].name}" if len(nodes) > 1 else f"  {nodes[0].name}")
    else:
        width = max(len(n.name) for n in nodes)
        lines += [f"  {n.name:<{width}}  {n.source}" + ("  (local)" if n.local else "")
                  + (f"  {n.slots} slots" if n.slots > 1 else "") for n in nodes]
    lines += ["", f"{_plural(total, 'job')} from {queue_file}" + ("" if total else " (the queue is empty)")]
    labels = [(str(j.source), f"({','.join(f'{k}={spec.scalar_text(v)}' for k, v in j.params)})" if j.params else "")
              for j in jobs]
    source_width = max((len(source) for source, _ in labels), default=0)
    params_width = max((len(params) for _, params in labels), default=0)
    indent = " " * (source_width + params_width + 6)
    for job, (source, params) in zip(jobs, labels):
        command = job.command.rstrip("\n").replace("\n", "\n" + indent)
        lines.append(f"  {source:<{source_width}}  {params:<{params_width}}  {command}".rstrip())
    if len(jobs) < total:
        lines.append(f"  ... and {total - len(jobs)} more (--all lists every job)")
    return "\n".join(lines) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def show_input(jobs, hosts_file: Optional[str], local_slots: int, out,
               hosts: Optional[Tuple[spec.HostEntry, ...]] = None) -> None:
    """`pegpar q --dry-run` on input (GNU parallel's `--dry-run`): each job's
    command line, printed as its input is read. Jobs go round the sub-nodes in
    order, as they would if every job took the same time: that sub-node's
    variables and number (`{%}`) are the ones shown."""
    nodes = expand.subnodes(hosts if hosts is not None else spec.load_hosts(hosts_file), local_slots)
    for k, job in enumerate(jobs):
        out.write(expand.render(job, nodes[k % len(nodes)]) + "\n")
        out.flush()
