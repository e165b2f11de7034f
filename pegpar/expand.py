"""Entries -> sub-nodes and jobs: ordered cartesian expansion, canonical form.

INTERFACE (implemented by the foundation work; other modules rely on exactly this).
Expansion order is the file's: the first key varies slowest, values in the
order written. Nothing here materializes a whole product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from pegpar.spec import HostEntry, Params, QueueEntry, Scalar, Source

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
Combination = Tuple[Tuple[str, Scalar], ...]  # ((name, value), ...) in dims order


@dataclass(frozen=True)
class SubNode:
    name: str  # unique, shown in prefixes: "node-1", "node-1 (container=gpu0)", "localhost/3"
    host: str  # rendered hostname: the ssh destination ("user@h", alias, "ssh://u@h:p") or a local name
    params: Combination  # host parameters, file order (hostname not included)
    local: bool  # runs without ssh
    source: Optional[Source] = None  # None for the implicit local sub-nodes

    def variables(self) -> Dict[str, Scalar]:
        """Template variables this sub-node contributes: its params and `hostname`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Job:
    """One combination of a queue entry: a single command and one value per parameter."""

    command: str  # the command TEMPLATE (not rendered)
    params: Combination  # command parameters only, dims order, `command` excluded
    source: Source
    plain: bool = False  # came from a bare string entry

    def variables(self) -> Dict[str, Scalar]:
        raise NotImplementedError

    def canonical(self) -> Union[str, Dict[str, Any]]:
        """The YAML object that, pasted into queue.yaml, runs this job again:
        the bare string for a plain job, else {"command": [cmd], name: [value], ...}
        with keys in the entry's order."""
        raise NotImplementedError


def subnodes(entries: Optional[Tuple[HostEntry, ...]], local_slots: int) -> Tuple[SubNode, ...]:
    """hosts.yaml entries -> sub-nodes in file order. entries=None means no
    hosts.yaml: `local_slots` sub-nodes "localhost/1".."localhost/N" on the local
    machine. Rejects duplicate sub-nodes and hostnames with spaces or shell
    metacharacters (UserError naming FILE:LINE)."""
    raise NotImplementedError


def count(dims: Params) -> int:
    """Number of combinations, computed, never enumerated."""
    raise NotImplementedError


def jobs(entry: QueueEntry) -> Iterator[Job]:
    """All jobs of an entry, lazily, in file order."""
    raise NotImplementedError


def first_job(entry: QueueEntry) -> Job:
    raise NotImplementedError


def remainder(dims: Params) -> List[Params]:
    """The product minus its first combination, as at most len(dims) products
    whose concatenation lists the remaining combinations in the same order."""
    raise NotImplementedError


def canonical_entry(entry_dims: Params, plain: bool) -> Union[str, Dict[str, Any]]:
    """YAML object for an entry (a remainder product, or a whole entry)."""
    raise NotImplementedError


def dump_yaml_items(objs: List[Union[str, Dict[str, Any]]]) -> str:
    """Block-style YAML list items ("- ...\\n") for canonical objects, readable
    (flow lists for values, block scalars for multi-line commands), that
    parse back to the same objects."""
    raise NotImplementedError


def check_collisions(entry: QueueEntry, nodes: Tuple[SubNode, ...]) -> None:
    """UserError when a command parameter is named `hostname` or is also a host
    parameter of any sub-node."""
    raise NotImplementedError


def render(job: Job, node: SubNode) -> str:
    """The job's command rendered with the job's and the sub-node's variables
    (via pegpar.template; strict, no HTML escaping)."""
    raise NotImplementedError
