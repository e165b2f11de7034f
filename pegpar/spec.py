"""hosts.yaml and queue.yaml -> validated entries that remember FILE:LINE.

Parameter values are YAML scalars kept as loaded (str, int, float, bool); a
scalar given where a list is expected is a one-value list. `Params` keeps the
file's key order and value order.

How the YAML is read, and why:
- Scalars follow the YAML 1.2 core schema, as Pegasus' parser did, so `yes`,
  `on`, `1:30` and dates stay text (YAML 1.1, PyYAML's default, would turn them
  into true, 90 and a date). On top of that, a value becomes a number or a
  boolean only when it prints back exactly as written: `8`, `0.5` and `true`
  are typed, while `08`, `3.10`, `1e-5`, `0x1F` and `True` stay the text the
  user wrote. A template therefore always renders a value as written.
- The file is read as a stream of parser events (libyaml when available) and
  composed here, at most four levels deep: nothing deeper is valid in either
  file, and a deeply nested file cannot exhaust the stack.
- Anchors and aliases (`&lrs [1, 2]` ... `*lrs`) share a value: an alias is
  the anchored node itself, never a copy, and must fit where it stands (a list
  of values cannot become a value), so an alias bomb ("billion laughs") is
  refused by the depth rule without expanding anything. The values aliases
  bring into a file's entries are bounded too (MAX_ALIASED), against files
  that repeat an alias to a long list many times. A queue file is read one
  entry at a time, so an `Anchors` carries the anchors of the entries before.
- A null (`~`, `null`, or nothing) is text as Pegasus renders it: in a list of
  values `~` and `null` are the text written, an empty item is `~`; a key with
  nothing after it (`lr:`) is an error, since it is more likely a slip than a
  wish for the text `~`.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from pegpar.errors import UserError

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


def scalar_text(value: Scalar) -> str:
    """A value as a template prints it: as written in the file (booleans as
    `true` / `false`)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


@functools.lru_cache(maxsize=4096)
def read_plain(text: str) -> Optional[Scalar]:
    """The value an unquoted YAML scalar `text` loads as in pegpar files (None
    for null); the writer of canonical entries quotes text that would not read
    back as itself."""
    return _as(text, _resolve(text))


def load_hosts(path: str) -> Optional[Tuple[HostEntry, ...]]:
    """Read hosts.yaml. A missing file returns None (run on the local machine)."""
    text = _read(path, missing_ok=True)
    return None if text is None else parse_hosts(text, path)


def parse_hosts(text: str, path: str) -> Tuple[HostEntry, ...]:
    items = _items(text, path, 1)
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
    return tuple(_queue_entry(node, Source(path, node.line)) for node in _items(text, path, first_line, anchors))


def queue_entry_from_object(obj: Any, source: Source) -> QueueEntry:
    """Validate one already-loaded YAML item (str or mapping) as a queue entry."""
    return _queue_entry(_Node.of(obj, source.line), source)


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


# --- YAML -> a small tree of nodes that know their line -----------------------

_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
_MAX_DEPTH = 4  # list of entries > entry map > value list > value
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NULL_RE = re.compile(r"~|null|Null|NULL|")
_BOOL_RE = re.compile(r"true|True|TRUE|false|False|FALSE")


@dataclass(frozen=True)
class _Node:
    kind: str  # "scalar" | "seq" | "map"
    line: int
    # scalar: the value (None for YAML null); seq: tuple of _Node;
    # map: tuple of (key _Node, value _Node) in file order
    value: Any

    @staticmethod
    def of(obj: Any, line: int) -> "_Node":
        """Wraps an object loaded elsewhere (pasted back from the journal, added by code)."""
        if isinstance(obj, Mapping):
            return _Node("map", line, tuple((_Node("scalar", line, k), _Node.of(v, line)) for k, v in obj.items()))
        if isinstance(obj, (list, tuple)):
            return _Node("seq", line, tuple(_Node.of(v, line) for v in obj))
        return _Node("scalar", line, obj)


def _loader_class() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _items(text: str, path: str, first_line: int, anchors: Optional["Anchors"] = None) -> Tuple[_Node, ...]:
    """The items of the top-level list (empty for an empty or comments-only text)."""
    top = _compose(text, path, first_line, Anchors() if anchors is None else anchors)
    if top is None or (top.kind == "scalar" and isinstance(top.value, Null)):
        return ()
    if top.kind != "seq":
        raise UserError("the file must be a YAML list: one entry per line starting with `- `",
                        where=f"{path}:{top.line}")
    return top.value


def _compose(text: str, path: str, first_line: int, anchors: "Anchors") -> Optional[_Node]:
    import yaml

    loader = _loader_class()(text)
    try:
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        top = _Composer(loader, path, first_line, anchors).node(1)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            raise UserError("more than one YAML document (a second `---`)",
                            where=f"{path}:{loader.peek_event().start_mark.line + first_line}")
        return top
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, text, path, first_line) from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + first_line
        raise UserError(f"invalid YAML: character {text[err.position]!r} is not allowed",
                        where=f"{path}:{line}") from None
    except yaml.YAMLError as err:  # not expected from PyYAML, but never a traceback
        raise UserError(f"invalid YAML: {_one_line(str(err))}", where=path) from None
    finally:
        loader.dispose()


class Anchors:
    """The anchors met so far in a file: name -> node, `defined` the names
    anchored by the text read last, `aliased` the values aliases brought in."""

    def __init__(self) -> None:
        self.nodes: Dict[str, _Node] = {}
        self.defined: List[str] = []
        self.aliased = 0


# Values that aliases may bring into one file's entries: far more than any real
# file shares, far less than memory holds.
MAX_ALIASED = 2_000_000


class _Composer:
    def __init__(self, loader: Any, path: str, first_line: int, anchors: Anchors):
        self.loader, self.path, self.first_line, self.anchors = loader, path, first_line, anchors

    def node(self, depth: int) -> _Node:
        import yaml

        loader, path = self.loader, self.path
        event = loader.get_event()
        line = event.start_mark.line + self.first_line
        kind = type(event)
        if kind is yaml.ScalarEvent:
            node = _Node("scalar", line, _scalar(event, path, line))
        elif kind is yaml.AliasEvent:
            return self._alias(event.anchor, line, depth)
        else:
            if depth >= _MAX_DEPTH:
                flow_map = kind is yaml.MappingStartEvent and event.flow_style
                raise _too_deep(path, line, flow_map)
            _check_collection_tag(event, path, line)
            if kind is yaml.SequenceStartEvent:
                items = []
                while not loader.check_event(yaml.SequenceEndEvent):
                    items.append(self.node(depth + 1))
                loader.get_event()
                node = _Node("seq", line, tuple(items))
            else:
                pairs = []
                while not loader.check_event(yaml.MappingEndEvent):
                    key = self.node(_MAX_DEPTH)  # a key is never a collection
                    pairs.append((key, self.node(depth + 1)))
                loader.get_event()
                node = _Node("map", line, tuple(pairs))
        if event.anchor is not None:
            self.anchors.nodes[event.anchor] = node
            self.anchors.defined.append(event.anchor)
        return node

    def _alias(self, name: str, line: int, depth: int) -> _Node:
        node = self.anchors.nodes.get(name)
        where = f"{self.path}:{line}"
        if node is None:
            raise UserError(f"YAML alias *{name} has no anchor &{name} before it", where=where,
                            hint=f"anchor a value first, e.g. `lrs: &{name} [0.1, 0.01]`")
        size = _fits(node, depth)
        if size is None:
            raise _too_deep(self.path, line, False)
        self.anchors.aliased += size
        if self.anchors.aliased > MAX_ALIASED:
            raise UserError(f"YAML aliases bring more than {MAX_ALIASED:,} values into the file", where=where,
                            hint="write a shorter list, or fewer aliases to it")
        return _Node(node.kind, line, node.value)


def _fits(node: _Node, depth: int) -> Optional[int]:
    """How many values `node` holds, if it may stand at `depth`; else None."""
    if node.kind == "scalar":
        return 1
    if depth >= _MAX_DEPTH:
        return None
    total = 0
    children = node.value if node.kind == "seq" else (n for pair in node.value for n in pair)
    for child in children:
        size = _fits(child, depth + 1) if child.kind != "scalar" else 1
        if size is None:
            return None
        total += size
    return total


def _too_deep(path: str, line: int, flow_map: bool) -> UserError:
    return UserError("a value must be a plain value (text, number, true/false), not a list or map",
                     where=f"{path}:{line}",
                     hint="`{` starts a YAML map: quote text that contains {{ }}, e.g. 'echo {{ x }}'"
                     if flow_map else None)


def _check_collection_tag(event: Any, path: str, line: int) -> None:
    import yaml

    expected = "tag:yaml.org,2002:" + ("seq" if isinstance(event, yaml.SequenceStartEvent) else "map")
    if event.tag not in (None, "!", expected):
        raise UserError(f"unsupported YAML tag {event.tag}", where=f"{path}:{line}")


class Null(str):
    """A YAML null, as the text written for it ("" for nothing)."""


def _scalar(event: Any, path: str, line: int) -> Scalar:
    """A scalar event -> str, int, float, bool or Null, by the rules in the module docstring."""
    text, tag = event.value, event.tag
    if tag is None and event.implicit[0]:
        value = read_plain(text)
    elif tag in (None, "!"):
        return text
    elif tag not in (_STR, _NULL, _INT, _FLOAT, _BOOL):
        raise UserError(f"unsupported YAML tag {tag}", where=f"{path}:{line}")
    else:
        value = _as(text, tag)
    return Null(text) if value is None else value


def _as(text: str, tag: str) -> Optional[Scalar]:
    if tag == _STR:
        return text
    if tag == _NULL:
        return None
    try:
        typed: Scalar = {_INT: int, _FLOAT: float, _BOOL: lambda t: {"true": True, "false": False}[t]}[tag](text)
    except (ValueError, KeyError):
        return text
    return typed if scalar_text(typed) == text else text


_MAYBE_TYPED = frozenset("~nNtTfF+-.0123456789")


def _resolve(text: str) -> str:
    if text and text[0] not in _MAYBE_TYPED:
        return _STR
    for tag, pattern in ((_NULL, _NULL_RE), (_BOOL, _BOOL_RE), (_INT, _INT_RE), (_FLOAT, _FLOAT_RE)):
        if pattern.fullmatch(text):
            return tag
    return _STR


def _yaml_error(err: Any, text: str, path: str, first_line: int) -> UserError:
    mark = err.problem_mark or err.context_mark
    where = f"{path}:{mark.line + first_line}" if mark else path
    problem = _one_line(err.problem or err.context or "unreadable")
    if err.problem and err.context and err.context_mark and err.context_mark.line != mark.line:
        problem += f", {_one_line(err.context)} that starts at line {err.context_mark.line + first_line}"
    lines = text.splitlines()[min(m.line for m in (err.problem_mark, err.context_mark) if m):mark.line + 1] \
        if mark else []
    hint = None
    if any("{{" in line for line in lines):  # YAML reads `[echo {{ x }}]` and `- {{ x }}` as maps
        hint = "quote a command or value that contains {{ }}, e.g. ['echo {{ x }}']"
    elif "mapping values are not allowed" in problem:
        hint = "quote a command that contains ': ', e.g. - 'echo a: b'"
    elif "'\\t'" in problem:
        hint = "indent with spaces, not tabs"
    return UserError(f"invalid YAML: {problem}", where=where, hint=hint)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- entries -----------------------------------------------------------------

# `.` and `-` as in Pegasus's files; a template reaches such a name as {{[a.b]}}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RESERVED = ("this", "else", "true", "false", "null", "undefined")


def _host_entry(node: _Node, source: Source) -> HostEntry:
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


def _queue_entry(node: _Node, source: Source) -> QueueEntry:
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


def _key_where(node: _Node, name: str, source: Source) -> str:
    """FILE:LINE of a key of an entry's map."""
    line = next((key.line for key, _ in node.value if key.value == name), source.line)
    return f"{source.path}:{line}"


def check_command(command: str, source: Source) -> None:
    """A command sh -c can run: no NUL character (an argument cannot hold one)."""
    if "\0" in command:
        raise UserError("the command holds a NUL character (\\0), which no shell command can hold",
                        where=str(source))


def _required_text(node: _Node, source: Source, what: str) -> str:
    if isinstance(node.value, Null):
        raise UserError(f"empty entry: expected a {what}", where=str(source))
    if not isinstance(node.value, (str, int, float, bool)):
        raise UserError(f"expected a {what}, got {type(node.value).__name__}", where=str(source))
    text = scalar_text(node.value)
    if not text.strip():
        raise UserError(f"empty {what}", where=str(source))
    return text


def _dims(node: _Node, required: str, source: Source, expected: str) -> Params:
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
        if name != required and (not _NAME_RE.fullmatch(name) or name in _RESERVED):
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


def _value(node: _Node, name: str, required: str, path: str, listed: bool) -> Scalar:
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
