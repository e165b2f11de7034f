"""watch.Watch: which files of a folder changed since the last look."""

from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import watch  # noqa: E402


def test_files_written_created_or_moved_in_are_named_once(tmp_path):
    logs, other = tmp_path / "logs", tmp_path / "other"
    logs.mkdir()
    other.mkdir()
    (logs / "1.a").write_text("x")
    w = watch.Watch([str(logs)])
    try:
        assert w.changed() is None  # the first look cannot tell what came before it
        assert w.changed() == set()
        with open(logs / "1.a", "a") as f:
            f.write("more")
        (logs / "2.b").write_text("new")
        (other / "3.c").write_text("moved")
        os.rename(other / "3.c", logs / "3.c")
        (other / "4.d").write_text("elsewhere")
        assert w.changed() == {str(logs / n) for n in ("1.a", "2.b", "3.c")}
        assert w.changed() == set()  # each change is told once
    finally:
        w.close()


def test_an_overflow_means_unknown():
    event = struct.pack("iIII", 1, watch.IN_MODIFY, 0, 8) + b"a.out\0\0\0"
    assert watch.parse_events(event, {1: "/logs"}) == {"/logs/a.out"}
    assert watch.parse_events(event + struct.pack("iIII", -1, watch.IN_Q_OVERFLOW, 0, 0), {1: "/logs"}) is None


def test_without_a_folder_to_watch_it_cannot_tell(tmp_path):
    w = watch.Watch([str(tmp_path / "missing")])
    assert w.changed() is None and w.changed() is None
    w.close()


def test_a_wait_ends_at_a_change_or_a_wake_and_otherwise_times_out(tmp_path):
    import threading
    import time

    w = watch.Watch([str(tmp_path)])
    try:
        w.changed()
        t0 = time.monotonic()
        assert w.wait(0.3) and time.monotonic() - t0 >= 0.25  # nothing happened: the whole timeout
        threading.Timer(0.05, w.wake).start()
        t0 = time.monotonic()
        w.wait(30)
        assert time.monotonic() - t0 < 20  # woken (a signal handler's call), not timed out
        threading.Timer(0.05, lambda: (tmp_path / "1.out").write_text("x")).start()
        t0 = time.monotonic()
        w.wait(30)
        assert time.monotonic() - t0 < 20
        assert w.changed() == {str(tmp_path / "1.out")}
    finally:
        w.close()


def test_an_urgent_change_ends_a_wait_at_once_and_output_alone_not_before_the_settle_time(tmp_path):
    """A job's end report frees a sub-node: the loop must not sleep on it.
    Output alone ends a wait only once `settle` has passed, however much comes:
    jobs that print a lot cost a few turns a second, not one a line."""
    import threading
    import time

    w = watch.Watch([str(tmp_path)], urgent=(".done",))
    try:
        w.changed()
        stop = threading.Event()

        def printing():  # a job that prints all the time
            with open(tmp_path / "1.out", "a") as f:
                while not stop.is_set():
                    f.write("line\n")
                    f.flush()
                    time.sleep(0.002)

        printer = threading.Thread(target=printing)
        printer.start()
        try:
            t0 = time.monotonic()
            w.wait(30, settle=0.4)
            assert time.monotonic() - t0 >= 0.4  # output alone: not sooner
            assert w.changed() == {str(tmp_path / "1.out")}  # what the wait read is still told
            threading.Timer(0.1, lambda: (tmp_path / "w.done").write_text("1 0\n")).start()
            t0 = time.monotonic()
            w.wait(30, settle=25)
            assert time.monotonic() - t0 < 20  # the end report, not the settle time nor the timeout
            assert str(tmp_path / "w.done") in w.changed()
        finally:
            stop.set()
            printer.join()
    finally:
        w.close()
