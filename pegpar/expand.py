"""Entries -> sub-nodes and jobs: ordered cartesian expansion, canonical form.

INTERFACE (implemented by the foundation work; other modules rely on exactly this).
Expansion order is the file's: the first key varies slowest, values in the
order written. Nothing here materializes a whole product.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from pegpar.errors import UserError
from pegpar.spec import HostEntry, Params, QueueEntry, Scalar, Source, check_command, scalar_text

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
Combination = Tuple[Tuple[str, Scalar], ...]  # ((name, value), ...) in dims order


@dataclass(frozen=True)
class SubNode:
    name: str  # unique, shown in prefixes: "node-1", "node-1 (container=gpu0)", "localhost/3"
    host: str  # rendered hostname: the ssh destination ("user@h", alias, "ssh://u@h:p") or a local name
    params: Combination  # host parameters, file order (hostname not included)
    local: bool  # runs without ssh
    source: Optional[Source] = None  # None for the implicit local sub-nodes
    slots: int = 1  # how many slots (GPUs, say) its jobs share; a job takes Job.slots of them
    slot: int = 1  # its number among its host's sub-nodes (GNU parallel's `{%}`)

    def variables(self) -> Dict[str, Scalar]:
        """Template variables this sub-node contributes: its params and `hostname`."""
        return {**dict(self.params), "hostname": self.host}


@dataclass(frozen=True)
class Job:
    """One combination of a queue entry: a single command and one value per parameter."""

    command: str  # the command TEMPLATE (not rendered)
    params: Combination  # command parameters only, dims order, `command` excluded
    source: Source
    plain: bool = False  # came from a bare string entry
    call: Optional[Any] = None  # a job of `pegpar q -- COMMAND`: its sources.Call (arguments, form)

    def variables(self) -> Dict[str, Scalar]:
        return dict(self.params)

    @property
    def slots(self) -> int:
        """How many of a sub-node's slots the job takes (its `slots` parameter; 1)."""
        value = dict(self.params).get("slots", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    @property
    def policy(self) -> str:
        """How its slots are chosen: `first_fit` (the default) or `buddy`."""
        return str(dict(self.params).get("allocation_policy", "first_fit"))

    def canonical(self) -> Union[str, Dict[str, Any]]:
        """The YAML object that, pasted into queue.yaml, runs this job again:
        the bare string for a plain job, else {"command": [cmd], name: [value], ...}
        with keys in the entry's order."""
        if self.plain:
            return self.command
        return {"command": [self.command], **{name: [value] for name, value in self.params}}


MAX_SUBNODES = 100_000  # beyond this a hosts.yaml is a mistake, and GNU parallel could not hold the slots
# what pegpar passes to ssh as a destination: never a space, quote or shell character
_SAFE_HOST = re.compile(r"[A-Za-z0-9_.@:/\[\]-]+")


def subnodes(entries: Optional[Tuple[HostEntry, ...]], local_slots: int) -> Tuple[SubNode, ...]:
    """hosts.yaml entries -> sub-nodes in file order. entries=None means no
    hosts.yaml: `local_slots` sub-nodes "localhost/1".."localhost/N" on the local
    machine. The same host with the same parameters twice is two sub-nodes
    (the second named `... #2`). Rejects hostnames with spaces or shell
    metacharacters (UserError naming FILE:LINE).

    Within an entry the hostname varies slowest (a host's sub-nodes are
    listed together), then the parameters in file order."""
    if entries is None:
        if local_slots < 1:
            raise UserError(f"{local_slots} local sub-nodes requested", hint="ask for at least one, e.g. -j 4")
        return tuple(SubNode(f"localhost/{i}", "localhost", (), True, slot=i) for i in range(1, local_slots + 1))
    nodes: List[SubNode] = []
    copies: Dict[Any, int] = {}  # (host, params) -> how many sub-nodes have them so far
    on_host: Dict[str, int] = {}  # host -> its sub-nodes so far
    for entry in entries:
        if len(nodes) + len(entry.hostnames) * count(entry.params) > MAX_SUBNODES:
            raise UserError(f"more than {MAX_SUBNODES} sub-nodes", where=str(entry.source))
        names = tuple(name for name, _ in entry.params)
        for hostname in entry.hostnames:
            for values in itertools.product(*(values for _, values in entry.params)):
                params = tuple(zip(names, values))
                host = _host(hostname, params, entry.source)
                # the same host and parameters again is one more runner there, as in
                # Pegasus: named `host (k=v) #2`, `#3`...
                key = (host, frozenset(params))
                copies[key] = copies.get(key, 0) + 1
                name = _name(host, params) + (f" #{copies[key]}" if copies[key] > 1 else "")
                on_host[host] = on_host.get(host, 0) + 1
                nodes.append(SubNode(name, host, params, host.lower() in LOCAL_NAMES, entry.source, entry.slots,
                                     on_host[host]))
    return tuple(nodes)


def _host(hostname: str, params: Combination, source: Source) -> str:
    from pegpar import template

    host = template.render(hostname, dict(params), source)
    if not _SAFE_HOST.fullmatch(host) or host.startswith("-"):
        raise UserError(f"invalid hostname {host!r}", where=str(source),
                        hint="a hostname, user@host, ssh://user@host:port or an ssh_config alias: "
                             "letters, digits and _ . @ : / [ ] -, not starting with -")
    if host.startswith("ssh://") and not _ssh_url(host):
        raise UserError(f"invalid ssh URL {host!r}", where=str(source),
                        hint="ssh://[user@]host[:port], the port between 1 and 65535")
    return host


def _ssh_url(host: str) -> bool:
    """Whether `ssh://...` is a URL ssh takes: a host, an optional user and port, nothing after."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(host)
        port = url.port
    except ValueError:
        return False
    user, _, host = url.netloc.rpartition("@")
    host = host.rsplit(":", 1)[0] if port is not None or host.endswith(":") else host
    user_ok = bool(_URL_PART.fullmatch(user)) if "@" in url.netloc else True
    return (bool(_URL_PART.fullmatch(host)) and user_ok and not url.path and port != 0
            and not url.query and not url.fragment)


# a host or user in an ssh:// URL: what ssh takes there (no IPv6 brackets, no leading -)
_URL_PART = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")


def _name(host: str, params: Combination) -> str:
    if not params:
        return host
    return f"{host} ({','.join(f'{name}={scalar_text(value)}' for name, value in params)})"


def count(dims: Params) -> int:
    """Number of combinations, computed, never enumerated."""
    return math.prod(len(values) for _, values in dims)


def jobs(entry: QueueEntry) -> Iterator[Job]:
    """All jobs of an entry, lazily, in file order."""
    names = tuple(name for name, _ in entry.dims)
    at = names.index("command")
    for values in itertools.product(*(values for _, values in entry.dims)):
        params = tuple((name, value) for i, (name, value) in enumerate(zip(names, values)) if i != at)
        yield Job(str(values[at]), params, entry.source, entry.plain)


def first_job(entry: QueueEntry) -> Job:
    return next(jobs(entry))


def remainder(dims: Params) -> List[Params]:
    """The product minus its first combination, as at most len(dims) products
    whose concatenation lists the remaining combinations in the same order."""
    rest: List[Params] = []
    for i in range(len(dims) - 1, -1, -1):
        name, values = dims[i]
        if len(values) > 1:
            fixed = tuple((n, v[:1]) for n, v in dims[:i])
            rest.append(fixed + ((name, values[1:]),) + dims[i + 1:])
    return rest


def canonical_entry(entry_dims: Params, plain: bool) -> Union[str, Dict[str, Any]]:
    """YAML object for an entry (a remainder product, or a whole entry)."""
    if plain and len(entry_dims) == 1 and len(entry_dims[0][1]) == 1:
        return str(entry_dims[0][1][0])
    return {name: list(values) for name, values in entry_dims}


def dump_yaml_items(objs: List[Union[str, Dict[str, Any]]]) -> str:
    """Block-style YAML list items ("- ...\\n") for canonical objects, readable
    (flow lists for values, block scalars for multi-line commands), that
    parse back to the same objects."""
    import yaml

    if not objs:
        return ""
    return yaml.dump(_Items(objs), Dumper=_dumper(), default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=2 ** 31)


class _Items(list):
    """The top-level list: block style, one `- ` item per object."""


@functools.lru_cache(maxsize=None)
def _dumper() -> Any:
    import yaml

    from pegpar.spec import read_plain

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, data: str) -> Any:
        if any(c in data for c in "\x85\u2028\u2029"):
            style = '"'  # YAML line breaks that PyYAML would write raw and then read back as a break
        elif "\n" in data:
            style = "|"
        elif read_plain(data) != data or not isinstance(read_plain(data), str):
            style = "'"  # unquoted, pegpar would read a number, true/false or null
        else:
            style = None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    def number(dumper: Any, data: float) -> Any:
        text = repr(data)
        if type(read_plain(text)) is float and read_plain(text) == data:
            # plain, as written: PyYAML would turn 1e-05 into 1.0e-05, which pegpar reads as text
            return dumper.represent_scalar(dumper.resolve(yaml.ScalarNode, text, (True, False)), text)
        return yaml.SafeDumper.represent_float(dumper, data)

    def values(dumper: Any, data: list) -> Any:
        multiline = any(isinstance(v, str) and "\n" in v for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=not multiline)

    Dumper.add_representer(str, text)
    Dumper.add_representer(float, number)
    Dumper.add_representer(list, values)
    Dumper.add_representer(tuple, values)
    Dumper.add_representer(_Items, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data,
                                                                         flow_style=False))
    return Dumper


def check_collisions(entry: QueueEntry, nodes: Tuple[SubNode, ...]) -> None:
    """UserError when a command parameter is named `hostname` or is also a host
    parameter of any sub-node."""
    names = {name for name, _ in entry.params}
    if "hostname" in names:
        raise UserError("`hostname` is the sub-node's host and cannot be a queue parameter",
                        where=str(entry.source), hint="rename the parameter")
    for node in nodes:
        for name, _ in node.params:
            if name in names:
                raise UserError(f"`{name}` is both a parameter of this entry and a host parameter of "
                                f"`{node.name}` ({node.source})", where=str(entry.source),
                                hint="rename one of them")


# Variables every job has, set by where it runs: `slots` is the slot indices it
# was given ("0,1"), `allocation_policy` how they were chosen.
RUN_VARIABLES = ("slots", "allocation_policy")


def render(job: Job, node: SubNode, slots: Optional[Sequence[int]] = None) -> str:
    """The job's command rendered with the job's and the sub-node's variables
    and the slot indices it was given (`slots`; by default the first
    job.slots), via pegpar.template: strict, no HTML escaping."""
    from pegpar import template

    given = range(job.slots) if slots is None else slots
    variables = {**node.variables(), **job.variables(),
                 "slots": ",".join(str(i) for i in given), "allocation_policy": job.policy}
    if job.call is not None:
        command = job.call.render(variables, node.slot, job.source)
    else:
        command = template.render(job.command, variables, job.source)
    check_command(command, job.source)  # a value may bring one in
    return command
