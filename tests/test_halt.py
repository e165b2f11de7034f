"""--halt's rules (pegpar/halt.py), each case as the vendored GNU parallel
gives it: `parallel -j1 --halt H 'exit {}' ::: STATUSES` (checked for real in
test_parallel_mode.py)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import halt  # noqa: E402


def _run(h, statuses):
    """Jobs end one by one (-j1): the exit status when --halt is reached, or
    that of the run's end."""
    failed = finished = 0
    last_failed = 0
    for status in statuses:
        finished += 1
        if status:
            failed += 1
            last_failed = status
        got = halt.reached(h, failed, finished, len(statuses), last_failed if h[1] == "fail" else status)
        if got is not None:
            return got, finished
    return (halt.unreached_status(h, failed, finished) if failed else 0), finished


@pytest.mark.parametrize("h,statuses,expected", [
    (("soon", "fail", 1, False), [0, 0, 6], (6, 3)),  # the job's own status
    (("soon", "fail", 2, False), [5, 5, 5], (2, 2)),  # how many failed
    (("soon", "fail", 3, False), [7, 7, 7, 7], (3, 3)),
    (("soon", "fail", 50, True), [0, 3, 0, 4], (50, 4)),  # the percentage of all jobs that failed
    (("soon", "fail", 50, True), [0, 3, 0, 0], (25, 4)),  # not reached: that of the started jobs
    (("now", "fail", 25, True), [0, 3, 0, 0], (3, 2)),  # 25 % of 4 is one job: its status
    (("soon", "success", 50, True), [0, 3, 0, 0], (0, 3)),
    (("soon", "done", 50, True), [0, 3, 0, 0], (25, 2)),
    (("soon", "done", 2, False), [3, 0, 4], (1, 2)),
    (("soon", "done", 1, False), [3, 0, 4], (3, 1)),
])
def test_halt_as_gnu_parallel(h, statuses, expected):
    assert _run(h, statuses) == expected


def test_a_percentage_waits_for_the_total():
    assert halt.reached(("soon", "fail", 10, True), 5, 5, None, 1) is None


def test_without_halt_the_status_is_how_many_failed_at_most_101():
    assert halt.unreached_status(None, 3, 10) == 3
    assert halt.unreached_status(None, 500, 900) == 101


def test_which_ends_count():
    assert [halt.counts(h, s) for h in (None, ("soon", "fail", 1, False), ("soon", "success", 1, False),
                                        ("now", "done", 2, False)) for s in (0, 3)] == \
        [False, False, False, True, True, False, True, True]
