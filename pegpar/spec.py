"""hosts.yaml and queue.yaml -> validated entries that remember FILE:LINE.

Parameter values are YAML scalars kept as loaded (str, int, float, bool); a
scalar given where a list is expected is a one-value list. `Params` keeps the
file's key order and value order.

The YAML itself is read by yamltree.py (schema, depth, anchors, nulls).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pegpar.errors import UserError
from pegpar.yamltree import (MAX_ALIASED, Anchors, Node, Null, Scalar, list_items, read_plain,  # noqa: F401
                             scalar_text)

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
    slots: int = 1  # job slots (GPUs, say) of each of this entry's sub-nodes


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
    text = _read(path, missing_ok=True)
    return None if text is None else parse_hosts(text, path)


def parse_hosts(text: str, path: str) -> Tuple[HostEntry, ...]:
    items = list_items(text, path, 1)
    if not items:
        raise UserError("no hosts in the file", where=path,
                        hint=f"list hostnames as `- node-1`, or delete {path} to run on this machine")
    return tuple(_host_entry(node, Source(path, node.line)) for node in items)


def load_queue(path: str) -> Tuple[QueueEntry, ...]:
    """Read the whole queue.yaml (validation, expand). Missing file -> UserError with a hint."""
    text = _read(path, missing_ok=False)
    assert text is not None
    return parse_queue(text, path)


def parse_queue(text: str, path: str, first_line: int = 1,
                anchors: Optional["Anchors"] = None) -> Tuple[QueueEntry, ...]:
    """Parse queue text. `first_line` is the file line of text's first line, so
    that a slice of a file (one entry cut out by pegpar.queue) reports true lines;
    `anchors` holds those of the text before the slice, and gets the slice's."""
    return tuple(_queue_entry(node, Source(path, node.line)) for node in list_items(text, path, first_line, anchors))


def queue_entry_from_object(obj: Any, source: Source) -> QueueEntry:
    """Validate one already-loaded YAML item (str or mapping) as a queue entry."""
    return _queue_entry(Node.of(obj, source.line), source)


# --- reading files -----------------------------------------------------------

def _read(path: str, missing_ok: bool) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UserError("file not found", where=path,
                        hint=f"create one, e.g. echo '- echo hello' > {shlex.quote(path)}") from None
    except IsADirectoryError:
        raise UserError("is a directory, not a file", where=path) from None
    except OSError as err:
        raise UserError(f"cannot read: {err.strerror}", where=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 text (byte 0x{data[err.start]:02x})", where=f"{path}:{line}",
                        hint="save the file as UTF-8") from None


# --- entries -----------------------------------------------------------------

# `.` and `-` as in Pegasus's files; a template reaches such a name as {{[a.b]}}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
RESERVED = ("this", "else", "true", "false", "null", "undefined")


def _host_entry(node: Node, source: Source) -> HostEntry:
    if node.kind == "scalar":
        return HostEntry((_required_text(node, source, "host"),), (), source)
    dims = _dims(node, "hostname", source, "a hostname, or a map with a `hostname` list")
    slots = dict(dims).get("slots")
    if slots is not None:
        where = _key_where(node, "slots", source)
        if len(slots) != 1:
            raise UserError("`slots` of a host entry is one number (the slots of each of its sub-nodes), "
                            "not a list", where=where, hint="write e.g. `slots: 8`")
        _check_slot_count(slots[0], where)
    return HostEntry(tuple(str(v) for v in dict(dims)["hostname"]),
                     tuple(d for d in dims if d[0] not in ("hostname", "slots")), source,
                     int(slots[0]) if slots else 1)


POLICIES = ("first_fit", "buddy")  # how a job's slots are chosen on a sub-node (see placement.allocate)


def _queue_entry(node: Node, source: Source) -> QueueEntry:
    if node.kind == "scalar":
        entry = QueueEntry((("command", (_required_text(node, source, "command"),)),), source, plain=True)
    else:
        entry = QueueEntry(_dims(node, "command", source, "a command, or a map with a `command` list"), source)
        dims = dict(entry.dims)
        for value in dims.get("slots", ()):
            _check_slot_count(value, _key_where(node, "slots", source))
        policy = dims.get("allocation_policy")
        if policy is not None:
            where = _key_where(node, "allocation_policy", source)
            if len(policy) != 1:
                raise UserError("`allocation_policy` is one value for the whole entry, not a list to sweep",
                                where=where, hint="write e.g. `allocation_policy: buddy`")
            if policy[0] not in POLICIES:
                raise UserError(f"unknown allocation_policy {scalar_text(policy[0])!r}", where=where,
                                hint="first_fit or buddy")
    for command in entry.commands:
        if not command.strip():
            raise UserError("empty command", where=str(source))
        check_command(command, source)
    return entry


def _check_slot_count(value: Scalar, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"`slots` must be a whole number of at least 1, not {scalar_text(value)!r}", where=where)


def _key_where(node: Node, name: str, source: Source) -> str:
    """FILE:LINE of a key of an entry's map."""
    line = next((key.line for key, _ in node.value if key.value == name), source.line)
    return f"{source.path}:{line}"


def check_command(command: str, source: Source) -> None:
    """A command sh -c can run: no NUL character (an argument cannot hold one)."""
    if "\0" in command:
        raise UserError("the command holds a NUL character (\\0), which no shell command can hold",
                        where=str(source))


def _required_text(node: Node, source: Source, what: str) -> str:
    if isinstance(node.value, Null):
        raise UserError(f"empty entry: expected a {what}", where=str(source))
    if not isinstance(node.value, (str, int, float, bool)):
        raise UserError(f"expected a {what}, got {type(node.value).__name__}", where=str(source))
    text = scalar_text(node.value)
    if not text.strip():
        raise UserError(f"empty {what}", where=str(source))
    return text


def _dims(node: Node, required: str, source: Source, expected: str) -> Params:
    if node.kind != "map":
        raise UserError(f"an entry must be {expected}, not a list", where=str(source))
    dims: List[Tuple[str, Tuple[Scalar, ...]]] = []
    seen: Dict[str, int] = {}
    for key, value in node.value:
        where = f"{source.path}:{key.line}"
        name = key.value
        if not isinstance(name, str):
            name = scalar_text(name)
        if name in seen:
            raise UserError(f"`{name}` appears twice in this entry", where=where)
        seen[name] = key.line
        if name != required and (not _NAME_RE.fullmatch(name) or name in RESERVED):
            hint = "use letters, digits, _, . and -, starting with a letter or _"
            if " " in name:  # `- echo a: b` is a map to YAML
                hint = "quote a command that contains ': ', e.g. - 'echo a: b'"
            raise UserError(f"invalid parameter name {name!r}", where=where, hint=hint)
        if required == "command" and name == "hostname":  # whatever the hosts are
            raise UserError("command parameter `hostname` collides: `hostname` is set by the sub-node; rename it",
                            where=where)
        values = value.value if value.kind == "seq" else (value,)
        if value.kind == "map":
            raise UserError(f"`{name}` must be a list of values, not a map", where=where)
        if not values:
            raise UserError(f"`{name}` is an empty list", where=where, hint="give it at least one value")
        dims.append((name, tuple(_value(v, name, required, source.path, value.kind == "seq") for v in values)))
    if required not in seen:
        keys = ", ".join(f"`{k}`" for k in seen) or "no keys"
        raise UserError(f"entry has no `{required}` list (it has {keys})", where=str(source),
                        hint=f"an entry is {expected}")
    return tuple(dims)


def _value(node: Node, name: str, required: str, path: str, listed: bool) -> Scalar:
    where = f"{path}:{node.line}"
    if node.kind != "scalar" or isinstance(node.value, (list, tuple, Mapping)):
        raise UserError(f"`{name}` values must be plain values (text, numbers, true/false), "
                        "not nested lists or maps", where=where)
    value = node.value
    if isinstance(value, Null):
        if value or listed:
            return str(value) or "~"  # as Pegasus renders a null: the text written, `~` for nothing
        raise UserError(f"`{name}` has no value", where=where, hint="quote '' for an empty text")
    if not isinstance(value, (str, int, float, bool)):
        raise UserError(f"`{name}` has a value of unsupported type {type(value).__name__}", where=where)
    return scalar_text(value) if name == required else value
