"""Placement on its own: which sub-node and which of its slots take a job, over plain data."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import placement  # noqa: E402
from pegpar.errors import NotYet, UserError  # noqa: E402
from pegpar.expand import Job, SubNode  # noqa: E402
from pegpar.spec import QueueEntry, Source  # noqa: E402


def node(host: str, slots: int = 1, **params) -> SubNode:
    name = host + (" (" + ",".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    return SubNode(name, host, tuple(params.items()), False, None, slots)


A0, A1, B0 = node("a", gpu=0), node("a", gpu=1), node("b", gpu=0)
C = node("c")  # no gpu parameter
NODES = [A0, A1, B0, C]


def job(command: str, **params) -> Job:
    return Job(command, tuple(params.items()), Source("queue.yaml", 3))


# -- the allocator -------------------------------------------------------------
def test_first_fit_prefers_a_block_at_an_even_index_then_any_block_then_any_slots():
    # the notes' example: 8 slots with 1 and 4-5 taken, a 2-slot job gets 2-3
    assert placement.allocate({1, 4, 5}, 8, 2, "first_fit") == (2, 3)
    assert placement.allocate(set(), 8, 1, "first_fit") == (0,)
    assert placement.allocate({0}, 8, 1, "first_fit") == (2,)  # even starts first, for 1 slot too
    assert placement.allocate({0, 3, 4, 7}, 8, 2, "first_fit") == (1, 2)  # no even block: any block
    assert placement.allocate({1, 3, 5, 7}, 8, 3, "first_fit") == (0, 2, 4)  # no block: any slots
    assert placement.allocate({1, 3, 5, 7}, 8, 5, "first_fit") is None  # only 4 free
    assert placement.allocate(set(), 8, 8, "first_fit") == tuple(range(8))


def test_buddy_gives_aligned_power_of_two_blocks_or_nothing():
    assert placement.allocate({1}, 8, 2, "buddy") == (2, 3)
    assert placement.allocate({0}, 8, 4, "buddy") == (4, 5, 6, 7)
    assert placement.allocate({1, 4}, 8, 4, "buddy") is None  # 5 free, no aligned block: it waits
    assert placement.allocate({0, 3, 4, 7}, 8, 2, "buddy") is None  # 1-2 and 5-6 are free, not aligned
    assert placement.allocate(set(), 8, 3, "buddy") is None
    assert placement.allocate(set(), 6, 4, "buddy") == (0, 1, 2, 3)
    assert placement.allocate({0}, 6, 4, "buddy") is None  # 4-7 does not exist on 6 slots


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 16),
       steps=st.lists(st.tuples(st.booleans(), st.integers(1, 16), st.sampled_from(["first_fit", "buddy"]),
                                st.integers(0, 100)), max_size=60))
def test_no_slot_is_given_to_two_running_jobs_and_buddy_blocks_are_aligned(total, steps):
    """Jobs start and end in any order: every allocation is free slots only,
    of the size asked, and a buddy allocation is an aligned power-of-two block."""
    running = []  # slot tuples of running jobs
    for start, n, policy, pick in steps:
        if not start and running:
            running.pop(pick % len(running))
            continue
        held = {i for slots in running for i in slots}
        got = placement.allocate(held, total, n, policy)
        if got is None:
            continue
        assert len(got) == n == len(set(got)) and not held.intersection(got) and all(0 <= i < total for i in got)
        if policy == "buddy":
            assert n & (n - 1) == 0 and got[0] % n == 0 and got == tuple(range(got[0], got[0] + n))
        running.append(got)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 16), held=st.sets(st.integers(0, 15)), n=st.integers(1, 16))
def test_first_fit_finds_slots_whenever_enough_are_free(total, held, n):
    held = {i for i in held if i < total}
    got = placement.allocate(held, total, n, "first_fit")
    assert (got is not None) == (total - len(held) >= n)


# -- placement ------------------------------------------------------------------
def test_free_nodes_leave_out_full_unavailable_and_leaving_ones_in_file_order():
    big = node("d", slots=4)
    free = placement.free_nodes(NODES + [big], {A0.name: {0}, big.name: {0, 1}}, {"b"}, {C.name})
    assert free == [A1, big]
    assert placement.free_slots(free, {big.name: {0, 1}}) == 3
    assert placement.free_nodes(NODES, {}, set(), set()) == NODES


def test_a_job_goes_to_the_first_idle_sub_node_it_renders_on_with_its_slots():
    assert placement.place(job("run {{gpu}}"), [A1, B0], NODES, {}, {}, set()) == (A1, (0,), "run 1")
    # C has no `gpu`: a job using it skips C
    assert placement.place(job("run {{gpu}}"), [C, B0], NODES, {}, {}, set()) == (B0, (0,), "run 0")
    assert placement.place(job("echo {{hostname}}"), [C], NODES, {}, {}, set()) == (C, (0,), "echo c")


def test_a_job_takes_slots_on_the_first_sub_node_with_room_and_renders_them():
    four, two = node("n1", slots=4), node("n2", slots=2)
    nodes = [four, two]
    two_slot = job("use {{slots}} {{allocation_policy}}", slots=2)
    assert placement.place(two_slot, nodes, nodes, {four.name: {0, 1, 2}}, {}, set()) == \
        (two, (0, 1), "use 0,1 first_fit")
    # two free slots apart still fit under first_fit (its last resort)
    assert placement.place(two_slot, nodes, nodes, {four.name: {0, 2}}, {}, set()) == \
        (four, (1, 3), "use 1,3 first_fit")
    assert placement.place(two_slot, nodes, nodes, {four.name: {0}}, {}, set()) == (four, (2, 3), "use 2,3 first_fit")
    # four slots fit only on n1; while its slots are held the job waits
    with pytest.raises(NotYet):
        placement.place(job("x", slots=4), nodes, nodes, {four.name: {3}}, {}, set())
    buddy = job("{{slots}}", slots=2, allocation_policy="buddy")
    assert placement.place(buddy, nodes, nodes, {four.name: {1}}, {}, set()) == (four, (2, 3), "2,3")


def test_a_job_that_never_fits_is_an_error_naming_its_entry():
    nodes = [node("n1", slots=4), node("n2", slots=2)]
    with pytest.raises(UserError, match="needs 8 slots, more than any sub-node has \\(the most is 4\\)") as err:
        placement.place(job("x", slots=8), nodes, nodes, {}, {}, set())
    assert not isinstance(err.value, NotYet) and err.value.where == "queue.yaml:3"
    with pytest.raises(UserError, match="powers of two"):
        placement.place(job("x", slots=3, allocation_policy="buddy"), nodes, nodes, {}, {}, set())


def test_check_slots_finds_the_entry_no_sub_node_can_ever_take():
    nodes = [node("n1", slots=4), node("n2", slots=2)]
    ok = QueueEntry((("command", ("a",)), ("slots", (1, 2, 4))), Source("q.yaml", 1))
    bad = QueueEntry((("command", ("b",)), ("slots", (2, 3)), ("allocation_policy", ("buddy",))), Source("q.yaml", 7))
    placement.check_slots([ok], nodes)
    with pytest.raises(UserError, match="needs 3 slots under allocation_policy buddy") as err:
        placement.check_slots([ok, bad], nodes)
    assert err.value.where == "q.yaml:7"


def test_a_job_only_busy_sub_nodes_render_waits_for_them():
    with pytest.raises(NotYet, match="waits for a \\(gpu=0\\)"):
        placement.place(job("run {{gpu}}"), [C], NODES, {}, {}, set())


def test_a_job_whose_only_sub_nodes_are_down_says_so_and_one_no_sub_node_renders_gets_its_own_error():
    with pytest.raises(UserError, match="whose host is down") as err:
        placement.place(job("run {{gpu}}"), [C], [A0, C], {}, {"a": "no answer"}, set())
    assert not isinstance(err.value, NotYet) and err.value.where == "queue.yaml:3"
    # leaving sub-nodes do not count as ones it could wait for
    with pytest.raises(UserError, match="unknown variable `gpu`") as err:
        placement.place(job("run {{gpu}}"), [C], [A0, C], {}, {}, {A0.name})
    assert not isinstance(err.value, NotYet)


def test_render_is_the_callers():
    seen = []

    def render(j, n, slots=None):
        seen.append(n.name)
        if n is A0:
            raise UserError("not here")
        return n.name

    assert placement.place(job("x"), [A0, A1], NODES, {}, {}, set(), render=render) == (A1, (0,), A1.name)
    assert seen == [A0.name, A1.name]


def test_the_head_is_promised_the_sub_node_with_the_most_free_slots_it_fits_on():
    n1, n2, n3 = node("n1", slots=4), node("n2", slots=8), node("n3", slots=2)
    nodes = [n1, n2, n3]
    head = job("x", slots=4)
    assert placement.target(head, nodes, {n1.name: {0}, n2.name: {0, 1, 2, 3, 4, 5}}, set(), set()) is n1
    assert placement.target(head, nodes, {n1.name: {0, 1}, n2.name: {0, 1, 2}}, set(), set()) is n2
    assert placement.target(head, nodes, {}, {"n2"}, set()) is n1  # n2's host is down
    assert placement.target(job("x", slots=16), nodes, {}, set(), set()) is None


def test_command_parameters_may_not_shadow_host_ones():
    placement.check_names(job("x {{lr}}", lr=1), NODES)
    with pytest.raises(UserError, match="`gpu` collides"):
        placement.check_names(job("x", gpu=1), NODES)
    with pytest.raises(UserError, match="`hostname` is set by the sub-node"):
        placement.check_names(job("x", hostname="h"), NODES)


def test_held_slots_gathers_each_sub_nodes_slots_into_new_sets():
    running = [("a", (0,)), ("b", (0, 1)), ("a", (2,))]
    held = placement.held_slots(running)
    assert held == {"a": {0, 2}, "b": {0, 1}}
    held["a"].add(1)  # a dispatch turn adds its placements to them
    assert placement.held_slots(running) == {"a": {0, 2}, "b": {0, 1}}
