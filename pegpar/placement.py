"""Placement: which sub-node, and which of its slots, take a job.

Plain functions over plain data, without side effects: the controller asks
them and acts on the answer (reserve the slots, start the job, or let the
job wait). A sub-node has `slots` slots (1 unless hosts.yaml says `slots: N`),
numbered from 0; a job takes `Job.slots` of them, chosen by its
allocation policy (`allocate`). A job goes to the first sub-node, in
hosts-file order, that it renders on and that has room for it now; when
only a busy one (or one held back for the waiting head, see `target`) would
take it, it waits (NotYet) and keeps its place in line; when none ever
would, its own error says why.
"""

from __future__ import annotations

from typing import AbstractSet, Callable, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from pegpar import expand
from pegpar.errors import NotYet, UserError
from pegpar.expand import Job, SubNode
from pegpar.spec import QueueEntry

Render = Callable[..., str]  # (job, node, slots) -> command, as expand.render
Held = Mapping[str, AbstractSet[int]]  # sub-node name -> the slot indices its running jobs hold


def allocate(held: AbstractSet[int], total: int, n: int, policy: str) -> Optional[Tuple[int, ...]]:
    """n slot indices of a sub-node with `total` slots, none of them in `held`,
    or None when they cannot be had now.

    first_fit: a contiguous block starting at an even index, else any
    contiguous block, else any n free slots (lowest first). buddy: n must be a
    power of two and the block starts at a multiple of n (2 slots: 0-1, 2-3,
    ...; 4 slots: 0-3, 4-7); nothing else."""
    if n < 1 or total - len(held) < n:
        return None

    def block(start: int) -> Optional[Tuple[int, ...]]:
        indices = tuple(range(start, start + n))
        return indices if start + n <= total and not held.intersection(indices) else None

    if policy == "buddy":
        if n & (n - 1):
            return None
        return next(filter(None, (block(start) for start in range(0, total, n))), None)
    for starts in (range(0, total, 2), range(1, total, 2)):
        found = next(filter(None, (block(start) for start in starts)), None)
        if found:
            return found
    free = [i for i in range(total) if i not in held]
    return tuple(free[:n])


def fits_ever(job: Job, node: SubNode) -> bool:
    """Whether the job can run on the sub-node at all, once its slots are free."""
    return _fits(job.slots, job.policy, node)


def _fits(n: int, policy: str, node: SubNode) -> bool:
    return n <= node.slots and (policy != "buddy" or not n & (n - 1))


def never_fits(job: Job, nodes: Sequence[SubNode]) -> Optional[str]:
    """Why the job can run on none of the sub-nodes, whatever runs there: too
    many slots, or a count buddy cannot place (None when some sub-node could)."""
    return _never(job.slots, job.policy, nodes)


def _never(n: int, policy: str, nodes: Sequence[SubNode]) -> Optional[str]:
    if any(_fits(n, policy, node) for node in nodes):
        return None
    if policy == "buddy" and n & (n - 1):
        return f"needs {n} slots under allocation_policy buddy, which gives only powers of two (1, 2, 4, 8...)"
    most = max((node.slots for node in nodes), default=0)
    return f"needs {n} slots, more than any sub-node has (the most is {most})"


def check_slots(entries: Iterable[QueueEntry], nodes: Sequence[SubNode]) -> None:
    """A queue entry with a slot count no sub-node can ever give: UserError at
    its FILE:LINE (checked over the entries' values, without expanding them)."""
    for entry in entries:
        dims = dict(entry.dims)
        policy = str(dims.get("allocation_policy", ("first_fit",))[0])
        for n in dict.fromkeys(dims.get("slots", (1,))):
            why = _never(int(n), policy, nodes)
            if why is not None:
                raise UserError(why, where=str(entry.source), hint="ask for fewer slots, or give a host entry more")


def free_nodes(nodes: Sequence[SubNode], held: Held, unavailable_hosts: Collection[str],
               leaving: AbstractSet[str]) -> List[SubNode]:
    """The sub-nodes that may take a job now, in hosts-file order: a slot free,
    their host neither down nor being asked about, not leaving."""
    return [n for n in nodes if len(held.get(n.name, ())) < n.slots and n.host not in unavailable_hosts
            and n.name not in leaving]


def free_slots(nodes: Sequence[SubNode], held: Held) -> int:
    return sum(n.slots - len(held.get(n.name, ())) for n in nodes)


def place(job: Job, idle: Sequence[SubNode], nodes: Sequence[SubNode], held: Held, down: Mapping[str, str],
          leaving: AbstractSet[str], render: Render = expand.render) -> Tuple[SubNode, Tuple[int, ...], str]:
    """The first of the `idle` sub-nodes (those that may take a job now) the
    job renders on and has room on, with its slots and its command. When none
    does but another sub-node would (busy, held for the head, its host being
    asked about), NotYet: the job waits for it. When no sub-node ever would,
    the error that says why: its template's, or its slot count's."""
    first: Optional[UserError] = None
    tried = set()
    for node in idle:
        slots = allocate(held.get(node.name, frozenset()), node.slots, job.slots, job.policy)
        if slots is None:
            continue
        tried.add(node.name)
        try:
            return node, slots, render(job, node, slots)
        except UserError as err:
            first = first or err
    down_names = []
    renders = []
    for node in nodes:
        if node.name in leaving or node.name in tried:
            continue
        try:
            render(job, node)
        except UserError as err:
            first = first or err
            continue
        renders.append(node)
        if not fits_ever(job, node):
            continue
        if node.host not in down:  # busy, placed this turn, held for the head, or its host asked about
            raise NotYet(f"waits for {node.name} or another sub-node it renders on")
        down_names.append(node.name)
    why = never_fits(job, renders) if renders else None
    if down_names:  # checked again when a host comes back
        what = first.message if first is not None else why or f"needs {job.slots} slots"
        raise UserError(f"{what}; it would render on {', '.join(down_names[:3])}, whose host is down",
                        where=first.where if first is not None else str(job.source))
    if why is not None:
        raise UserError(why, where=str(job.source))
    assert first is not None
    raise first


def target(job: Job, nodes: Sequence[SubNode], held: Held, unavailable_hosts: Collection[str],
           leaving: AbstractSet[str], render: Render = expand.render) -> Optional[SubNode]:
    """The sub-node a waiting head is promised under --backfill: of those it
    renders on and fits on, the one with the most free slots (the first in
    the file on a tie). No later job starts there while the head waits, so the
    head starts at the latest when the jobs running there have ended."""
    best: Optional[SubNode] = None
    for node in nodes:
        if node.name in leaving or node.host in unavailable_hosts or not fits_ever(job, node):
            continue
        if best is not None and node.slots - len(held.get(node.name, ())) <= \
                best.slots - len(held.get(best.name, ())):
            continue
        try:
            render(job, node)
        except UserError:
            continue
        best = node
    return best


def held_slots(running: Iterable[Tuple[str, Sequence[int]]]) -> Dict[str, Set[int]]:
    """Sub-node name -> the slot indices held, from (sub-node, slots) of each
    running job; new sets, the caller's to change."""
    out: Dict[str, Set[int]] = {}
    for name, slots in running:
        held = out.get(name)
        if held is None:
            out[name] = set(slots)
        else:
            held.update(slots)
    return out


def job_key(job: Job) -> tuple:
    """A queue job, recognised from one turn to the next (who a --backfill promise is for)."""
    return (job.command, job.params, str(job.source))


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
