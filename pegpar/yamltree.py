"""YAML -> a small tree of nodes that know their line, for hosts.yaml and queue.yaml.

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
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from pegpar.errors import UserError

Scalar = Union[str, int, float, bool]


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


_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
_MAX_DEPTH = 4  # list of entries > entry map > value list > value
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NULL_RE = re.compile(r"~|null|Null|NULL|")
_BOOL_RE = re.compile(r"true|True|TRUE|false|False|FALSE")


@dataclass(frozen=True)
class Node:
    kind: str  # "scalar" | "seq" | "map"
    line: int
    # scalar: the value (None for YAML null); seq: tuple of Node;
    # map: tuple of (key Node, value Node) in file order
    value: Any

    @staticmethod
    def of(obj: Any, line: int) -> "Node":
        """Wraps an object loaded elsewhere (pasted back from the journal, added by code)."""
        if isinstance(obj, Mapping):
            return Node("map", line, tuple((Node("scalar", line, k), Node.of(v, line)) for k, v in obj.items()))
        if isinstance(obj, (list, tuple)):
            return Node("seq", line, tuple(Node.of(v, line) for v in obj))
        return Node("scalar", line, obj)


def _loader_class() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def list_items(text: str, path: str, first_line: int, anchors: Optional["Anchors"] = None) -> Tuple[Node, ...]:
    """The items of the top-level list (empty for an empty or comments-only text)."""
    top = _compose(text, path, first_line, Anchors() if anchors is None else anchors)
    if top is None or (top.kind == "scalar" and isinstance(top.value, Null)):
        return ()
    if top.kind != "seq":
        raise UserError("the file must be a YAML list: one entry per line starting with `- `",
                        where=f"{path}:{top.line}")
    return top.value


def _compose(text: str, path: str, first_line: int, anchors: "Anchors") -> Optional[Node]:
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
        self.nodes: Dict[str, Node] = {}
        self.defined: List[str] = []
        self.aliased = 0


# Values that aliases may bring into one file's entries: far more than any real
# file shares, far less than memory holds.
MAX_ALIASED = 2_000_000


class _Composer:
    def __init__(self, loader: Any, path: str, first_line: int, anchors: Anchors):
        self.loader, self.path, self.first_line, self.anchors = loader, path, first_line, anchors

    def node(self, depth: int) -> Node:
        import yaml

        loader, path = self.loader, self.path
        event = loader.get_event()
        line = event.start_mark.line + self.first_line
        kind = type(event)
        if kind is yaml.ScalarEvent:
            node = Node("scalar", line, _scalar(event, path, line))
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
                node = Node("seq", line, tuple(items))
            else:
                pairs = []
                while not loader.check_event(yaml.MappingEndEvent):
                    key = self.node(_MAX_DEPTH)  # a key is never a collection
                    pairs.append((key, self.node(depth + 1)))
                loader.get_event()
                node = Node("map", line, tuple(pairs))
        if event.anchor is not None:
            self.anchors.nodes[event.anchor] = node
            self.anchors.defined.append(event.anchor)
        return node

    def _alias(self, name: str, line: int, depth: int) -> Node:
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
        return Node(node.kind, line, node.value)


def _fits(node: Node, depth: int) -> Optional[int]:
    """How many values `node` holds, if it may stand at `depth`; else None."""
    if node.kind == "scalar":
        return 1
    if depth >= _MAX_DEPTH:
        return None
    total = 0
    children = node.value if node.kind == "seq" else (n for pair in node.value for n in pair)
    for child in children:
        size = _fits(child, depth + 1)
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
