"""Handlebars templates (pybars3): compiled once, rendered verbatim, strict names, helpers.

INTERFACE (implemented by the foundation work). pybars3 is imported lazily: it
takes about half a second to import and `pegpar --help` must stay fast.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from pegpar.spec import Scalar, Source


def render(text: str, variables: Mapping[str, Scalar], source: Source) -> str:
    """Render `text` with `variables`. No HTML escaping. A variable the template
    uses that is missing, an unknown helper, or a syntax error -> UserError
    naming the variable/helper, at `source` (FILE:LINE). Compiles each distinct
    text once (cache)."""
    raise NotImplementedError


def check(text: str, names: Iterable[str], source: Source) -> None:
    """Validate without real values: syntax, helpers, and that every variable
    used is one of `names`. Raises UserError like render."""
    raise NotImplementedError


def is_template(text: str) -> bool:
    """True when `text` contains Handlebars syntax at all (fast path: plain
    commands skip pybars entirely)."""
    return "{{" in text
