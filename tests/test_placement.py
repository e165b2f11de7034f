"""Placement on its own: which sub-node takes a job, over plain data."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import placement  # noqa: E402
from pegpar.errors import NotYet, UserError  # noqa: E402
from pegpar.expand import Job, SubNode  # noqa: E402
from pegpar.spec import Source  # noqa: E402


def node(host: str, **params) -> SubNode:
    name = host + (" (" + ",".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    return SubNode(name, host, tuple(params.items()), False)


A0, A1, B0 = node("a", gpu=0), node("a", gpu=1), node("b", gpu=0)
C = node("c")  # no gpu parameter
NODES = [A0, A1, B0, C]


def job(command: str, **params) -> Job:
    return Job(command, tuple(params.items()), Source("queue.yaml", 3))


def test_free_nodes_leave_out_busy_unavailable_and_leaving_ones_in_file_order():
    free = placement.free_nodes(NODES, busy={A0.name}, unavailable_hosts={"b"}, leaving={C.name})
    assert free == [A1]
    assert placement.free_nodes(NODES, {}, set(), set()) == NODES


def test_a_job_goes_to_the_first_idle_sub_node_it_renders_on():
    assert placement.place(job("run {{gpu}}"), [A1, B0], NODES, {}, set()) == (A1, "run 1")
    # C has no `gpu`: a job using it skips C
    assert placement.place(job("run {{gpu}}"), [C, B0], NODES, {}, set()) == (B0, "run 0")
    assert placement.place(job("echo {{hostname}}"), [C], NODES, {}, set()) == (C, "echo c")


def test_a_job_only_busy_sub_nodes_render_waits_for_them():
    with pytest.raises(NotYet, match="waits for a \\(gpu=0\\)"):
        placement.place(job("run {{gpu}}"), [C], NODES, {}, set())


def test_a_job_whose_only_sub_nodes_are_down_says_so_and_one_no_sub_node_renders_gets_its_own_error():
    with pytest.raises(UserError, match="whose host is down") as err:
        placement.place(job("run {{gpu}}"), [C], [A0, C], {"a": "no answer"}, set())
    assert not isinstance(err.value, NotYet) and err.value.where == "queue.yaml:3"
    # leaving sub-nodes do not count as ones it could wait for
    with pytest.raises(UserError, match="unknown variable `gpu`") as err:
        placement.place(job("run {{gpu}}"), [C], [A0, C], {}, {A0.name})
    assert not isinstance(err.value, NotYet)


def test_render_is_the_callers():
    seen = []

    def render(j, n):
        seen.append(n.name)
        if n is A0:
            raise UserError("not here")
        return n.name

    assert placement.place(job("x"), [A0, A1], NODES, {}, set(), render=render) == (A1, A1.name)
    assert seen == [A0.name, A1.name]


def test_command_parameters_may_not_shadow_host_ones():
    placement.check_names(job("x {{lr}}", lr=1), NODES)
    with pytest.raises(UserError, match="`gpu` collides"):
        placement.check_names(job("x", gpu=1), NODES)
    with pytest.raises(UserError, match="`hostname` is set by the sub-node"):
        placement.check_names(job("x", hostname="h"), NODES)
