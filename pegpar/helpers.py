"""The Handlebars helpers a template may call (Pegasus's set: those of
handlebars_misc_helpers and Handlebars' built-ins), and how a value reads to
them: a variable is its text (as Pegasus handed every value over), a number
still compares as a number.

HELPERS maps a name to (function, fewest arguments, most arguments or None).
A helper given a value it cannot use raises Problem, which the template
reports with FILE:LINE.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

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
    try:
        if isinstance(container, Mapping):
            return container[as_text(key)]
        if isinstance(container, (str, list, tuple)) and not isinstance(key, bool):
            return container[int(key)]
    except (KeyError, IndexError, ValueError):
        pass
    raise Problem(f"lookup: `{as_text(key)}` not found")


def _words(value: Any) -> Sequence[str]:
    """Words for the case helpers: split at anything not a letter or digit, at a
    lower-to-upper change, and before the last capital of an acronym (HTTPServer)."""
    words = []
    for chunk in re.findall(r"[^\W_]+", as_text(value)):
        start = 0
        for i in range(1, len(chunk)):
            prev, cur, nxt = chunk[i - 1], chunk[i], chunk[i + 1: i + 2]
            if cur.isupper() and (not prev.isupper() or nxt.islower()):
                words.append(chunk[start:i])
                start = i
        words.append(chunk[start:])
    return words


def _capitalized(word: str) -> str:
    return word[:1].upper() + word[1:].lower()


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


def _str1(f: Callable[[str], Any]) -> Tuple[Callable[..., Any], int, int]:
    return (lambda v: f(as_text(v))), 1, 1


HELPERS: Dict[str, Tuple[Callable[..., Any], int, Optional[int]]] = {
    "replace": (lambda v, old, new: as_text(v).replace(as_text(old), as_text(new)), 3, 3),
    "to_lower_case": _str1(str.lower),
    "to_upper_case": _str1(str.upper),
    "trim": _str1(str.strip),
    "trim_start": _str1(str.lstrip),
    "trim_end": _str1(str.rstrip),
    "to_snake_case": _str1(lambda s: "_".join(w.lower() for w in _words(s))),
    "to_kebab_case": _str1(lambda s: "-".join(w.lower() for w in _words(s))),
    "to_screaming_snake_case": _str1(lambda s: "_".join(w.upper() for w in _words(s))),
    "to_camel_case": _str1(lambda s: "".join(w.lower() if i == 0 else _capitalized(w)
                                             for i, w in enumerate(_words(s)))),
    "to_pascal_case": _str1(lambda s: "".join(_capitalized(w) for w in _words(s))),
    "to_title_case": _str1(lambda s: " ".join(_capitalized(w) for w in _words(s))),
    "to_train_case": _str1(lambda s: "-".join(_capitalized(w) for w in _words(s))),
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
}
