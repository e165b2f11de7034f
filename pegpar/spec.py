"""hosts.yaml and queue.yaml -> validated entries that remember FILE:LINE.

INTERFACE (implemented by the foundation work; other modules rely on exactly this):

Parameter values are YAML scalars kept as loaded (str, int, float, bool); a
scalar given where a list is expected is a one-value list. `Params` keeps the
file's key order and value order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

Scalar = Union[str, int, float, bool]
# ((name, (value, value, ...)), ...) in file order
Params = Tuple[Tuple[str, Tuple[Scalar, ...]], ...]


@dataclass(frozen=True)
class Source:
    path: str  # as the user named it (relative paths stay relative)
    line: int  # 1-based line of the entry's first line

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class HostEntry:
    """One item of hosts.yaml. A bare string is hostnames=(s,), params=()."""

    hostnames: Tuple[str, ...]  # templates (may use the entry's params)
    params: Params
    source: Source


@dataclass(frozen=True)
class QueueEntry:
    """One item of queue.yaml.

    A bare string is plain=True, dims=(("command", (s,)),).
    A map keeps ALL its keys in file order in `dims`, `command` included at the
    position where it appears in the file (it is one dimension of the product,
    like any parameter).
    """

    dims: Params
    source: Source
    plain: bool = False

    @property
    def params(self) -> Params:
        """dims without `command`."""
        return tuple(d for d in self.dims if d[0] != "command")

    @property
    def commands(self) -> Tuple[str, ...]:
        return tuple(str(v) for v in dict(self.dims)["command"])


def load_hosts(path: str) -> Optional[Tuple[HostEntry, ...]]:
    """Read hosts.yaml. A missing file returns None (run on the local machine)."""
    raise NotImplementedError


def parse_hosts(text: str, path: str) -> Tuple[HostEntry, ...]:
    raise NotImplementedError


def load_queue(path: str) -> Tuple[QueueEntry, ...]:
    """Read the whole queue.yaml (validation, expand). Missing file -> UserError with a hint."""
    raise NotImplementedError


def parse_queue(text: str, path: str, first_line: int = 1) -> Tuple[QueueEntry, ...]:
    """Parse queue text. `first_line` is the file line of text's first line, so
    that a slice of a file (one entry cut out by pegpar.queue) reports true lines."""
    raise NotImplementedError


def queue_entry_from_object(obj: Any, source: Source) -> QueueEntry:
    """Validate one already-loaded YAML item (str or mapping) as a queue entry."""
    raise NotImplementedError
