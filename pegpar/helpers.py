"""The Handlebars helpers a template may call (Pegasus's set: those of
handlebars_misc_helpers and Handlebars' built-ins), and how a value reads to
them: a variable is its text (as Pegasus handed every value over), a number
still compares as a number.

HELPERS maps a name to (function, fewest arguments, most arguments or None).
A helper given a value it cannot use raises Problem, which the template
reports with FILE:LINE.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from pathlib import PurePosixPath
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from pegpar import cases
from pegpar.spec import Scalar, scalar_text


class Problem(Exception):
    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class Written(str):
    """A variable's value as its text, as Pegasus handed every value to
    Handlebars: true unless empty (`0` and `false` are true), `len` counts its
    characters. `value` keeps the number for comparisons (eq, gt...)."""

    value: Scalar

    @staticmethod
    def of(value: Scalar) -> "Written":
        written = Written(scalar_text(value))
        written.value = value
        return written


def plain(value: Any) -> Any:
    """A variable's value as loaded (a number stays a number); others as they are."""
    return value.value if isinstance(value, Written) else value


def truthy(value: Any) -> bool:
    # as Handlebars: false, null, 0, "" and empty lists are false (a variable is text)
    return bool(value)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return scalar_text(value)
    raise Problem("cannot print a list or map; print one of its values")


def lookup(container: Any, key: Any) -> Any:
    if container is None:  # a missing variable: nothing to look in, as in Handlebars
        return None
    try:
        if isinstance(container, Mapping):
            return container[as_text(key)]
        if isinstance(container, (str, list, tuple)) and not isinstance(key, bool):
            return container[int(key)]
    except (KeyError, IndexError, ValueError):
        pass
    raise Problem(f"lookup: `{as_text(key)}` not found")


def _quote(*args: Any) -> str:
    """{{quote x}}: shell-quoted like shlex.quote. {{quote "'" x}} / {{quote '"' x}}
    (the Pegasus form, quote symbol first): always quoted with that symbol,
    escaped the way sh reads it back."""
    if len(args) == 1:
        return shlex.quote(as_text(args[0]))
    symbol, text = as_text(args[0]) or '"', as_text(args[1])
    if symbol == "'":
        return "'" + text.replace("'", "'\"'\"'") + "'"
    if symbol == '"':
        return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'
    raise Problem(f"quote: the quote symbol must be ' or \", not {symbol!r}")


def _unquote(value: Any) -> str:
    """Undo `quote`: a text wrapped in matching quotes loses them and the
    escaping inside, as sh reads it; anything else is returned unchanged."""
    text = as_text(value)
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "'\"":
        return text
    if text[0] == '"':
        return re.sub(r'\\([\\"$`])', r"\1", text[1:-1])
    try:
        words = shlex.split(text)  # also joins the 'it'"'"'s' pieces quote writes
    except ValueError:
        words = []
    return words[0] if len(words) == 1 else text[1:-1]


def _number(value: Any, helper: str) -> Any:
    value = plain(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", value):
        return float(value) if re.search(r"[.eE]", value) else int(value)
    raise Problem(f"`{helper}` compares numbers; {as_text(value)!r} is not a number")


def _equal(a: Any, b: Any) -> bool:
    a, b = plain(a), plain(b)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return a == b if numbers else as_text(a) == as_text(b)


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: test(_number(a, name), _number(b, name))


def _length(value: Any) -> int:
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise Problem(f"`len` needs a text, got {as_text(value)!r}")


def _parent(value: Any) -> str:
    text = as_text(value)
    path = PurePosixPath(text)
    if not path.name:
        return ""
    parent = str(path.parent)
    return "" if parent == "." and not text.startswith("./") else parent


def _env_var(key: Any) -> str:
    """The controller's environment variable (empty when unset), with the
    crate's own names for the platform: ARCH, OS, FAMILY, USERNAME..."""
    name = as_text(key)
    if name in _PLATFORM:
        return _PLATFORM[name]()
    if name == "USERNAME":
        return next((os.environ[k] for k in ("USERNAME", "username", "USER", "user") if k in os.environ), "noname")
    return os.environ.get(name, "")


_PLATFORM: Dict[str, Callable[[], str]] = {
    "ARCH": lambda: {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine()),
    "OS": lambda: {"darwin": "macos"}.get(sys.platform, "linux" if sys.platform.startswith("linux") else sys.platform),
    "FAMILY": lambda: "windows" if os.name == "nt" else "unix",
    "DLL_PREFIX": lambda: "" if os.name == "nt" else "lib",
    "DLL_EXTENSION": lambda: {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so"),
    "DLL_SUFFIX": lambda: "." + {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so"),
    "EXE_EXTENSION": lambda: "exe" if os.name == "nt" else "",
    "EXE_SUFFIX": lambda: ".exe" if os.name == "nt" else "",
}


def _read_to_str(path: Any) -> str:
    """A file's text, read on the controller (empty when there is no such file)."""
    try:
        with open(as_text(path), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as err:
        raise Problem(f"read_to_str: cannot read {as_text(path)!r}: {err}")


def _canonicalize(path: Any) -> str:
    """The absolute path with links resolved, on the controller; empty when it does not exist."""
    text = as_text(path)
    return os.path.realpath(text) if text and os.path.exists(text) else ""


def _str_to_json(text: Any) -> Any:
    """JSON text -> the value it holds (a map, a list...), usable with lookup, each and with."""
    raw = as_text(text)
    if raw == "":
        return ""
    try:
        return json.loads(raw)
    except ValueError as err:
        raise Problem(f"str_to_json: not JSON ({err})")


def _json_to_str(value: Any) -> str:
    """A value as compact JSON text (empty for nothing or an empty text)."""
    value = plain(value)
    if value is None or value == "":
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _not_provided(name: str, why: str) -> Tuple[Callable[..., Any], int, None]:
    def refuse(*_: Any) -> Any:
        raise Problem(f"`{name}` is not provided by pegpar: {why}")
    return refuse, 0, None


def _str1(f: Callable[[str], Any]) -> Tuple[Callable[..., Any], int, int]:
    return (lambda v: f(as_text(v))), 1, 1


HELPERS: Dict[str, Tuple[Callable[..., Any], int, Optional[int]]] = {
    "replace": (lambda v, old, new: as_text(v).replace(as_text(old), as_text(new)), 3, 3),
    "to_lower_case": _str1(str.lower),
    "to_upper_case": _str1(str.upper),
    "trim": _str1(str.strip),
    "trim_start": _str1(str.lstrip),
    "trim_end": _str1(str.rstrip),
    "to_snake_case": _str1(cases.snake),
    "to_kebab_case": _str1(cases.kebab),
    "to_screaming_snake_case": _str1(cases.screaming_snake),
    "to_camel_case": _str1(cases.camel),
    "to_pascal_case": _str1(cases.pascal),
    "to_title_case": _str1(cases.title),
    "to_train_case": _str1(cases.train),
    "to_sentence_case": _str1(cases.sentence),
    "to_class_case": _str1(cases.class_case),
    "to_table_case": _str1(cases.table_case),
    "to_plural": _str1(cases.plural),
    "to_singular": _str1(cases.singular),
    "quote": (_quote, 1, 2),
    "unquote": (_unquote, 1, 1),
    "first_non_empty": (lambda *vs: next((v for v in vs if as_text(v) != ""), ""), 1, None),
    "file_name": _str1(lambda s: PurePosixPath(s).name),
    "parent": (_parent, 1, 1),
    "extension": _str1(lambda s: PurePosixPath(s).suffix[1:]),
    "lookup": (lookup, 2, 2),
    "eq": (_equal, 2, 2),
    "ne": (lambda a, b: not _equal(a, b), 2, 2),
    "gt": (_compare("gt", lambda a, b: a > b), 2, 2),
    "gte": (_compare("gte", lambda a, b: a >= b), 2, 2),
    "lt": (_compare("lt", lambda a, b: a < b), 2, 2),
    "lte": (_compare("lte", lambda a, b: a <= b), 2, 2),
    "and": (lambda *vs: all(truthy(v) for v in vs), 2, None),
    "or": (lambda *vs: any(truthy(v) for v in vs), 2, None),
    "not": (lambda v: not truthy(v), 1, 1),
    "len": (_length, 1, 1),
    "env_var": (_env_var, 1, 1),
    "read_to_str": (_read_to_str, 1, 1),
    "canonicalize": (_canonicalize, 1, 1),
    "str_to_json": (_str_to_json, 1, 1),
    "json_to_str": (_json_to_str, 1, 1),
    # Pegasus's other helpers that pegpar cannot honour as they are: an error
    # that says so, never a silent empty text in a command
    "json_query": _not_provided("json_query", "JMESPath queries are not implemented; use lookup on "
                                "str_to_json's value"),
    "json_str_query": _not_provided("json_str_query", "JMESPath queries are not implemented; use lookup on "
                                    "str_to_json's value"),
    "from_json": _not_provided("from_json", "it is a block helper over format= arguments, which pegpar's "
                               "templates do not take; use str_to_json"),
    "to_json": _not_provided("to_json", "it is a block helper over format= arguments, which pegpar's templates "
                             "do not take; use json_to_str"),
    "jsonnet": _not_provided("jsonnet", "Jsonnet is not available to pegpar"),
    "assign": _not_provided("assign", "templates do not set variables in pegpar; give the value as a parameter"),
    "http_get": _not_provided("http_get", "pegpar does not fetch URLs while it renders commands "
                              "(a command can: curl, wget)"),
    "gitignore_io": _not_provided("gitignore_io", "pegpar does not fetch URLs while it renders commands"),
}
