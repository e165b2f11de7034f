"""The static check of a parsed template (template.py's tree) against the
variables it may use: every variable used is one of them, except where it is
only tested (`#if`, `#unless`, `#with`, `#each`, `lookup`) and may be missing;
helpers exist and get as many arguments as they take."""

from __future__ import annotations

from typing import Any, Callable, FrozenSet, Optional, Tuple

from pegpar import helpers


def check_nodes(nodes: tuple, names: FrozenSet[str]) -> None:
    """helpers.Problem for the first thing the tree cannot do with `names`."""
    _check_nodes(nodes, names, in_each=False, scoped=False)


def _check_nodes(nodes: tuple, names: FrozenSet[str], in_each: bool, scoped: bool) -> None:
    for node in nodes:
        if node[0] == "mustache":
            _check_call(node[1], node[2], names, in_each, scoped)
        elif node[0] == "block":
            _, name, args, body, inverse = node
            _block_helper(name)
            _check_arity(name, len(args), 1, 1)
            for arg in args:  # `{{#if extra}}`: a variable a block tests may be missing (false, empty)
                _check_arg(arg, names, in_each, scoped, optional=True)
            missing = args[0][0] == "path" and len(args[0][1]) == 1 and _missing(args[0][1][0], names)
            inner_each = in_each or name == "each"
            inner_scoped = scoped or name in ("each", "with")
            # a missing variable is false: the branch it never takes is not checked
            # (`{{#if gpu}}--gpu {{gpu}}{{/if}}` where a sub-node has no gpu)
            if not missing or name == "unless":
                _check_nodes(body, names, inner_each, inner_scoped)
            if not missing or name != "unless":
                _check_nodes(inverse or (), names, in_each, scoped)


def _missing(head: str, names: FrozenSet[str]) -> bool:
    """A plain variable name that is not defined here."""
    return not head.startswith("@") and head != "this" and head not in names


def _check_call(path: Tuple[str, ...], args: tuple, names: FrozenSet[str], in_each: bool, scoped: bool) -> None:
    helper = helper_for(path, args, names)
    if helper is None:
        _check_path(path, names, in_each, scoped)
        return
    _, low, high = _helper(helper)
    _check_arity(helper, len(args), low, high)
    for arg in args:
        _check_arg(arg, names, in_each, scoped, optional=helper == "lookup")


def _check_arg(arg: tuple, names: FrozenSet[str], in_each: bool, scoped: bool, optional: bool = False) -> None:
    """`optional`: a plain variable there may be missing (what #if, #unless,
    #with, #each and lookup are given, as in Handlebars: missing is empty)."""
    if arg[0] == "path":
        if optional and len(arg[1]) == 1 and _missing(arg[1][0], names):
            return
        _check_path(arg[1], names, in_each, scoped)
    elif arg[0] == "sub":
        _, low, high = _helper(arg[1])
        _check_arity(arg[1], len(arg[2]), low, high)
        for inner in arg[2]:
            _check_arg(inner, names, in_each, scoped, optional=arg[1] == "lookup")


def _check_path(path: Tuple[str, ...], names: FrozenSet[str], in_each: bool, scoped: bool) -> None:
    head = path[0] if path else "this"
    if head.startswith("@"):
        if head == "@root":
            _check_path(path[1:] or ("this",), names, in_each, False)
        elif head not in _DATA_NAMES:
            raise helpers.Problem(f"unknown data variable `{head}`")
        elif not in_each:
            raise helpers.Problem(f"`{head}` is only defined inside {{{{#each}}}}")
    elif head == "this":
        if len(path) > 1 and not scoped:
            _check_path(path[1:], names, in_each, scoped)
    elif head not in names:
        known = ", ".join(sorted(names)) or "none"
        raise helpers.Problem(f"unknown variable `{head}` (defined here: {known})")
    elif len(path) > 1:
        raise helpers.Problem(f"`{'.'.join(path)}`: `{head}` is a plain value, it has no fields")


def _check_arity(name: str, count: int, low: int, high: Optional[int]) -> None:
    if count < low or (high is not None and count > high):
        want = f"{low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
        raise helpers.Problem(f"`{name}` takes {want} argument{'s' if want != '1' else ''}, got {count}")


def helper_for(path: Tuple[str, ...], args: tuple, names: FrozenSet[str]) -> Optional[str]:
    """The helper a mustache calls, or None when it prints a variable. A
    variable wins over a helper of the same name when there are no arguments."""
    name = path[0] if len(path) == 1 else None
    if not args and (name is None or name in names):
        return None
    if name in _BLOCK_HELPERS:
        raise helpers.Problem(f"`{name}` is a block helper: write {{{{#{name} x}}}}...{{{{/{name}}}}}")
    if not args and name not in helpers.HELPERS:
        return None  # an unknown variable, reported as such
    if name is None:
        raise helpers.Problem(f"`{'.'.join(path)}` is not a helper")
    _helper(name)
    return name


def _helper(name: str) -> Tuple[Callable[..., Any], int, Optional[int]]:
    if name not in helpers.HELPERS:
        if name in _BLOCK_HELPERS:
            raise helpers.Problem(f"`{name}` is a block helper and cannot be used inside ( )")
        raise helpers.Problem(f"unknown helper `{name}`")
    return helpers.HELPERS[name]


def _block_helper(name: str) -> None:
    if name in _BLOCK_HELPERS:
        return
    if name in helpers.HELPERS:
        raise helpers.Problem(f"`{name}` is not a block helper: write {{{{#if ({name} ...)}}}}")
    raise helpers.Problem(f"unknown block helper `{name}` (blocks are {', '.join(_BLOCK_HELPERS)})")


_DATA_NAMES = ("@index", "@key", "@first", "@last")
_BLOCK_HELPERS = ("if", "unless", "each", "with")
