"""Placement: which sub-node takes a job, given which are free, busy and down.

Plain functions over plain data, without side effects: the controller asks
them, and acts on the answer (reserve the sub-node, start the job, or let
the job wait). A job goes to the first free sub-node it renders on; when
only a busy one would take it, it waits (NotYet) and keeps its place in
line; when none would, its own error says why.
"""

from __future__ import annotations

from typing import AbstractSet, Callable, Collection, List, Mapping, Sequence, Tuple

from pegpar import expand
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job, SubNode

Render = Callable[[Job, SubNode], str]


def free_nodes(nodes: Sequence[SubNode], busy: Collection[str], unavailable_hosts: Collection[str],
               leaving: AbstractSet[str]) -> List[SubNode]:
    """The sub-nodes that may take a job now, in hosts-file order: not running
    one, their host neither down nor being asked about, not leaving."""
    return [n for n in nodes if n.name not in busy and n.host not in unavailable_hosts
            and n.name not in leaving]


def place(job: Job, idle: Sequence[SubNode], nodes: Sequence[SubNode], down: Mapping[str, str],
          leaving: AbstractSet[str], render: Render = expand.render) -> Tuple[SubNode, str]:
    """The first idle sub-node the job renders on, with its command. When
    none does but a busy one would, NotYet (the job waits for it); when no
    sub-node at all would, the error of the first idle one."""
    first = None
    for node in idle:
        try:
            return node, render(job, node)
        except UserError as err:
            first = first or err
    down_names = []
    for node in nodes:
        if node not in idle and node.name not in leaving:
            try:
                render(job, node)
            except UserError:
                continue
            if node.host not in down:  # busy, placed this turn, or its host asked about
                raise NotYet(f"waits for {node.name} or another sub-node it renders on")
            down_names.append(node.name)
    assert first is not None
    if down_names:  # checked again when a host comes back
        raise UserError(f"{first.message}; it would render on {', '.join(down_names[:3])}, whose host is down",
                        where=first.where)
    raise first


def check_names(job: Job, nodes: Sequence[SubNode]) -> None:
    """A command parameter may not be named `hostname` nor shadow a host parameter."""
    host_names = {"hostname"} | {k for n in nodes for k, _ in n.params}
    for name, _ in job.params:
        if name in host_names and job.source.path == "<stdin>":  # `line`, the input line
            raise UserError(f"a host parameter is named `{name}`, which names the input line of a command "
                            "given after --; rename that host parameter", where=str(job.source))
        if name in host_names:
            what = "`hostname` is set by the sub-node" if name == "hostname" else \
                "it is also a host parameter in the hosts file"
            raise UserError(f"command parameter `{name}` collides: {what}; rename one of them",
                            where=str(job.source))
