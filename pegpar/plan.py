"""`pegpar expand`: the sub-nodes and jobs the files expand to, as text or JSON.

INTERFACE (implemented by the foundation work).
"""

from __future__ import annotations


def show(queue_file: str, hosts_file: str, local_slots: int, *, show_all: bool, as_json: bool) -> str:
    """The whole output of `pegpar expand` (ends with a newline)."""
    raise NotImplementedError
