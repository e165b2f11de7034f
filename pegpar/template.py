"""Handlebars templates (pybars3): compiled once, rendered verbatim, strict names, helpers.

pybars3 parses the text with its Handlebars grammar; pegpar evaluates the
parse tree itself instead of running the Python code pybars3 generates,
because that code HTML-escapes every `{{ x }}`, prints '' for a misspelled
name and drops text it cannot parse (`{{#if x}}` without `{{/if}}` renders
nothing). Evaluating the tree here gives:

- no escaping: values are pasted verbatim into the shell command;
- strict names: a variable, helper or block that is not defined is an error
  naming it and FILE:LINE, found by `check` (templatecheck.py) before anything runs;
- a syntax error for any text the grammar does not consume entirely;
- `\\{{` for a literal `{{` (Handlebars' escape, which pybars3 lacks), next to
  raw blocks `{{{{raw}}}}...{{{{/raw}}}}`.

Names always mean the variables (the entry's and sub-node's parameters and
`hostname`), inside blocks too; `this` is the value of the enclosing
`{{#with}}` / `{{#each}}`, or the mapping of all variables at the top.

pybars3 is imported lazily: it takes about half a second to import and
`pegpar --help` must stay fast. Each distinct text is parsed once (cache).
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from pegpar import helpers, templatecheck
from pegpar.errors import UserError
from pegpar.spec import Scalar, Source, scalar_text


def render(text: str, variables: Mapping[str, Scalar], source: Source,
           paste: Callable[[str], str] = str) -> str:
    """Render `text` with `variables`. No HTML escaping: each `{{ }}` gives its
    value through `paste` (as is by default; shell-quoted for a command after
    `pegpar q --`). A variable the template uses that is missing, an unknown
    helper, or a syntax error -> UserError naming the variable/helper, at
    `source` (FILE:LINE). Compiles each distinct text once (cache)."""
    if not is_template(text):
        return text
    simple = _simple(text)
    if simple is not None and all(name in variables for name in simple[1::2]):
        return "".join(part if i % 2 == 0 else paste(scalar_text(variables[part]))
                       for i, part in enumerate(simple))
    tree = _checked(text, frozenset(variables), source)
    written = {name: helpers.Written.of(value) for name, value in variables.items()}
    try:
        out = _Evaluation(written, paste).nodes(tree, _Frame(written, None))
    except helpers.Problem as problem:
        raise UserError(f"template: {problem.message}", where=str(source), hint=problem.hint) from None
    return out.replace(_LITERAL_OPEN, "{{")


def check(text: str, names: Iterable[str], source: Source) -> None:
    """Validate without real values: syntax, helpers, and that every variable
    used is one of `names`. Raises UserError like render."""
    if is_template(text):
        simple = _simple(text)
        if simple is not None and set(simple[1::2]) <= set(names):
            return
        _checked(text, frozenset(names), source)


def check_syntax(text: str, source: Source) -> None:
    """UserError for a template that cannot parse, whatever the variables
    (cheap for plain commands and `{{ name }}` placeholders)."""
    if is_template(text) and _simple(text) is None:
        problem = _parse(text)[1]
        if problem:
            raise UserError(f"template: {problem.message}", where=str(source), hint=problem.hint)


def is_template(text: str) -> bool:
    """True when `text` contains Handlebars syntax at all (fast path: plain
    commands skip pybars entirely)."""
    return "{{" in text


_SIMPLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@functools.lru_cache(maxsize=4096)
def _simple(text: str) -> Optional[Tuple[str, ...]]:
    """Text split around `{{ name }}` placeholders (literal, name, literal, ...)
    when that is all the template does; None for anything else. Most commands
    only substitute variables, and this spares them pybars3's import (about
    half a second) and parse."""
    parts = tuple(_SIMPLE.split(text))
    literals = parts[0::2]
    if any("{{" in lit or "}}" in lit or lit.endswith("\\") for lit in literals):
        return None
    # `{{{ x }}` or `{{ x }}}`: a brace against a placeholder is Handlebars' business
    if any(lit.endswith("{") for lit in literals[:-1]) or any(lit.startswith("}") for lit in literals[1:]):
        return None
    return parts


# --- parsing -----------------------------------------------------------------
# The tree, built from pybars3's: a template is a tuple of nodes
#   ("text", str) | ("mustache", path, args) | ("block", name, args, body, inverse)
# an argument is ("path", path) | ("literal", value) | ("sub", name, args)
# and a path is a tuple of segments: ("x",), ("this",), ("this", "x"), ("@index",)

_LITERAL_OPEN = "\ufdd0"  # a Unicode noncharacter standing for an escaped "{{" while pybars3 parses


def _checked(text: str, names: FrozenSet[str], source: Source) -> tuple:
    tree, problem = _parse(text)
    problem = problem or _static_problem(text, names)
    if problem:
        raise UserError(f"template: {problem.message}", where=str(source), hint=problem.hint)
    return tree


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Tuple[tuple, Optional[helpers.Problem]]:
    # \\{{ is a backslash then a live {{; \{{ is a literal {{
    src = re.sub(r"\\(\\?)\{\{", lambda m: "\\{{" if m.group(1) else _LITERAL_OPEN, text)
    src = _rewritten(src)
    skeleton, runs = _skeleton(src)
    raw, problem = _pybars_parse(skeleton)
    exact = False
    if problem is None:
        texts = iter(runs)
        raw = _fill(raw, texts)
        # every run went back into literal text (not, say, into a "}}" string argument)
        exact = next(texts, None) is None and not any(_RUN in run for run in runs)
    if not exact:
        raw, problem = _pybars_parse(src)  # slow, but exact, and errors quote the real text
    if problem is not None:
        return (), problem
    try:
        return _nodes(raw), None
    except helpers.Problem as problem:
        return (), problem.with_traceback(None)  # cached: keep no frames alive


_CHAIN = re.compile(r"\{\{~?\s*else\s+[^\s}~]")
# a number pybars3 cannot read (a fraction or an exponent), outside quotes, in a tag
_REAL = re.compile(r"\{\{[^}]*?[\s(]-?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?[\s)~}]")
_REAL_ARG = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
                       r"|(?<=[\s(])(-?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?)(?=[\s)~]|$)")
_NUMBER_MARK = "\ufdd2"  # starts a string literal that stands for the number after it
_TOKEN = re.compile(r"\{\{\{\{\s*([^\s}]+).*?\}\}\}\}.*?\{\{\{\{/\s*\1\s*\}\}\}\}"  # a raw block
                    r"|\{\{(~?)!--.*?--(~?)\}\}"  # a long comment
                    r"|\{\{.*?\}\}", re.S)


def _rewritten(src: str) -> str:
    """What Handlebars (and so Pegasus) has and pybars3's grammar lacks, in
    terms it has: a long comment `{{!-- ... --}}` ends at `--}}` only, so it
    may hold `{{x}}` (it becomes `{{!}}`); `{{else if x}}` (any block helper
    after `else`) chains become nested blocks, closed together; and numbers
    like 0.05 or 1e3 become marked string literals (_args reads them back)."""
    if "{{!--" not in src and not _CHAIN.search(src) and not _REAL.search(src):
        return src
    out = []
    pos = 0
    stack: list = []  # per open block: the helpers chained to it by `{{else NAME ...}}`
    for match in _TOKEN.finditer(src):
        out.append(src[pos:match.start()])
        pos = match.end()
        tag = match.group(0)
        if tag.startswith("{{{{"):
            out.append(tag)
            continue
        if tag.startswith("{{!--") or tag.startswith("{{~!--"):
            out.append("{{" + match.group(2) + "!" + match.group(3) + "}}")
            continue
        inner = _REAL_ARG.sub(lambda m: m.group(1) or f"'{_NUMBER_MARK}{m.group(2)}'", tag[2:-2])
        tag = "{{" + inner + "}}"
        left, right = ("~" if inner.startswith("~") else ""), ("~" if inner.endswith("~") else "")
        body = inner.strip("~").strip()
        words = body.split(None, 1)
        if body[:1] in ("#", "^") and len(body) > 1:
            stack.append([])
        elif len(words) == 2 and words[0] == "else" and stack:
            stack[-1].append(words[1].split()[0])
            tag = "{{" + left + "else}}{{#" + words[1] + right + "}}"
        elif body[:1] == "/" and stack:
            closers = "".join("{{/" + name + "}}" for name in reversed(stack.pop()))
            if closers and left:  # the `~` strips what comes before the first of them
                closers, tag = "{{~" + closers[2:], "{{" + tag[3:]
            tag = closers + tag
        out.append(tag)
    out.append(src[pos:])
    return "".join(out)


# pybars3's grammar takes milliseconds per template, mostly to walk literal
# text character by character. A queue of thousands of commands that differ
# only in their literal text (a seed, a path) would take minutes to check. So
# each run of literal text outside {{ }} is replaced by one placeholder before
# parsing ("python a.py --lr {{ lr }}" and "python b.py --lr {{ lr }}" share
# the skeleton "<R> {{ lr }}"), and put back into the tree afterwards. Runs
# keep their surrounding spaces and newlines out, so that pybars3's handling
# of standalone block lines and `~` sees the same whitespace.
_RUN = "\ufdd1"
_TAG = re.compile(r"(\{\{.*?\}\})", re.S)
_CORE = re.compile(r"[^{}\\\r\n \t](?:[^{}\\\r\n]*[^{}\\\r\n \t])?")


def _skeleton(src: str) -> Tuple[str, Sequence[str]]:
    runs: list = []

    def placeholder(match: "re.Match[str]") -> str:
        runs.append(match.group(0))
        return _RUN

    parts = _TAG.split(src)
    parts[::2] = [_CORE.sub(placeholder, part) for part in parts[::2]]
    return "".join(parts), runs


def _fill(nodes: Sequence[Any], texts: Iterator[str]) -> tuple:
    """pybars3's nodes with each placeholder replaced by the next run, in text order."""
    def text(value: str) -> str:
        return re.sub(_RUN, lambda m: next(texts, _RUN), value)

    out = []
    for node in nodes:
        kind = node[0]
        if kind in ("literal", "whitespace", "newline"):
            node = (kind, text(node[1]))
        elif kind == "rawblock":
            node = (*node[:3], text(node[3]))
        elif kind in ("block", "invertedblock"):
            body = ["template", *_fill(node[3][1:], texts)]
            node = (*node[:3], body, ["template", *_fill(node[4][1:], texts)] if node[4] else [])
        out.append(node)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _pybars_parse(src: str) -> Tuple[Any, Optional[helpers.Problem]]:
    """pybars3's parse tree (without the leading "template"), or the syntax problem."""
    from pybars import Compiler

    src = Compiler().whitespace_control(src)
    try:
        grammar = Compiler._handlebars(src)
        tree, error = grammar.apply("template")
        stop = grammar.input.position
    except Exception:  # pymeta raises its own errors on some inputs; all are syntax errors
        return (), helpers.Problem("cannot parse the template", _SYNTAX_HINT)
    if stop < len(src):
        return (), _syntax_problem(src, stop, getattr(error, "position", stop))
    return tuple(tree[1:]), None


_SYNTAX_HINT = "write \\{{ for a literal {{"


def _syntax_problem(src: str, stop: int, farthest: int) -> helpers.Problem:
    rest = src[stop:]
    tag = re.match(r"\{\{~?\s*([#^/]?)\s*([^\s}]*)", rest)
    kind, name = (tag.group(1), tag.group(2)) if tag else ("", "")
    if kind in ("#", "^") and name and "{{/" + name not in rest.replace(" ", ""):
        return helpers.Problem(f"`{{{{{kind}{name}}}}}` is not closed by `{{{{/{name}}}}}`")
    if kind == "/":
        return helpers.Problem(f"`{{{{/{name}}}}}` closes a block that is not open")
    if kind == "" and name in ("else", "^"):
        return helpers.Problem("`{{else}}` outside a block")
    start = src.rfind("{{", 0, max(farthest, stop + 1))
    end = src.find("}}", max(start, farthest))
    near = src[start:len(src) if end < 0 else end + 2]
    near = near if len(near) <= 40 else near[:37] + "..."
    return helpers.Problem(f"syntax error near `{near.replace(_LITERAL_OPEN, '{{')}`", _SYNTAX_HINT)


def _nodes(items: Sequence[Any]) -> tuple:
    out = []
    for item in items:
        kind = item[0]
        if kind in ("literal", "newline", "whitespace"):
            out.append(("text", item[1]))
        elif kind in ("expand", "escapedexpand"):
            out.append(("mustache", _path(item[1][1]), _args(item[2])))
        elif kind in ("block", "invertedblock"):
            body, inverse = _nodes(item[3][1:]), _nodes(item[4][1:]) if item[4] else None
            if kind == "invertedblock":  # {{^name x}}: the branches swapped
                body, inverse = inverse or (), body
            out.append(("block", item[1], _args(item[2]), body, inverse))
        elif kind == "rawblock":
            out.append(("text", item[3]))
        elif kind == "partial":
            raise helpers.Problem("partials (`{{> name}}`) are not supported")
        # comments render nothing
    return tuple(out)


def _path(segments: Sequence[str]) -> Tuple[str, ...]:
    # "x.y" arrives as ("x", "", "y") and "../x" as ("@_parent", "x"); names
    # mean the variables at any depth, so ../ changes nothing
    return tuple(s for s in segments if s not in ("", "@_parent"))


def _args(items: Sequence[Any]) -> tuple:
    out = []
    for item in items:
        kind = item[0]
        if kind == "path":
            out.append(("path", _path(item[1])))
        elif kind == "literalparam":
            value = item[1]
            if isinstance(value, str):  # pybars3 keeps string literals as Python source
                value = ast.literal_eval(value)
                if value.startswith(_NUMBER_MARK):  # a number _rewritten hid from pybars3
                    value = float(value[1:])
            out.append(("literal", value))
        elif kind == "subexpr":
            out.append(("sub", "".join(item[1][1]), _args(item[2])))
        else:
            raise helpers.Problem(f"named arguments (`{item[1]}=...`) are not supported")
    return tuple(out)


# --- static check --------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _static_problem(text: str, names: FrozenSet[str]) -> Optional[helpers.Problem]:
    try:
        templatecheck.check_nodes(_parse(text)[0], names)
    except helpers.Problem as problem:
        return problem.with_traceback(None)  # cached: keep no frames alive
    return None


# --- evaluation --------------------------------------------------------------

@dataclass(frozen=True)
class _Frame:
    this: Any
    data: Optional[Dict[str, Any]]  # @index... of the innermost each


class _Evaluation:
    """One rendering; the tree has passed the static check for these variables."""

    def __init__(self, variables: Mapping[str, Scalar], paste: Callable[[str], str] = str):
        self.variables = variables
        self.names = frozenset(variables)
        self.paste = paste

    def nodes(self, nodes: tuple, frame: _Frame) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "mustache":
                out.append(self.paste(helpers.as_text(self.call(node[1], node[2], frame))))
            else:
                out.append(self.block(node, frame))
        return "".join(out)

    def call(self, path: Tuple[str, ...], args: tuple, frame: _Frame) -> Any:
        helper = templatecheck.helper_for(path, args, self.names)
        if helper is None:
            return self.lookup(path, frame)
        return helpers.HELPERS[helper][0](*(self.arg(a, frame) for a in args))

    def arg(self, arg: tuple, frame: _Frame) -> Any:
        if arg[0] == "literal":
            return arg[1]
        if arg[0] == "path":
            return self.lookup(arg[1], frame)
        return helpers.HELPERS[arg[1]][0](*(self.arg(a, frame) for a in arg[2]))

    def lookup(self, path: Tuple[str, ...], frame: _Frame) -> Any:
        head, rest = (path[0], path[1:]) if path else ("this", ())
        if head == "@root":
            value: Any = self.variables
        elif head.startswith("@"):
            value = (frame.data or {})[head]
        elif head == "this":
            value = frame.this
        else:  # missing only where the static check lets it be: a block's or lookup's argument
            value = self.variables.get(head)
        for segment in rest:
            value = helpers.lookup(value, segment)
        return value

    def block(self, node: tuple, frame: _Frame) -> str:
        _, name, args, body, inverse = node
        value = self.arg(args[0], frame)
        otherwise = "" if inverse is None else self.nodes(inverse, frame)
        if name == "if":
            return self.nodes(body, frame) if helpers.truthy(value) else otherwise
        if name == "unless":
            return otherwise if helpers.truthy(value) else self.nodes(body, frame)
        if name == "with":
            return self.nodes(body, _Frame(value, frame.data)) if helpers.truthy(value) else otherwise
        if isinstance(value, Mapping):
            items = [(key, value[key]) for key in value]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:  # a plain value is not a collection: the else branch, as in handlebars-rust
            items = []
        if not items:
            return otherwise
        last = len(items) - 1
        return "".join(
            self.nodes(body, _Frame(item, {"@index": i, "@key": key, "@first": i == 0, "@last": i == last}))
            for i, (key, item) in enumerate(items))
