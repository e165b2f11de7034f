"""--bar, --eta and --progress drawn as GNU parallel draws them (pure parts)."""

from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import meter  # noqa: E402
from pegpar.meter import RESET, REVERSE  # noqa: E402


def test_time_units_as_parallel_writes_them():
    assert [meter.time_units(s) for s in (0, 0.9, 59, 75, 3600, 3725, 90061)] == \
        ["0s", "0s", "59s", "1m15s", "1h00m00s", "1h02m05s", "1d01h01m01s"]


def test_numbers_as_perl_prints_them():
    assert [meter.perl_number(x) for x in (100.0, 0, 100 / 3, 200 / 3, 0.0210001468658447)] == \
        ["100", "0", "33.3333333333333", "66.6666666666667", "0.0210001468658447"]


def test_a_bar_frame_while_running():
    frame = meter.bar(20, 4, 1, 9, "b", done=False, elapsed=3.0)
    text = "25% 1:3=9s b".ljust(20)
    assert frame == ("\r" + "#   9 sec b".ljust(20) + "\r25\r" + REVERSE + text[:5] + RESET + text[5:] + RESET)


def test_the_last_bar_frame_shows_the_time_taken():
    frame = meter.bar(30, 2, 2, 0, "b c", done=True, elapsed=0.5)
    text = "100% 2:0=0s b c".ljust(30)
    assert frame == "\r" + "#   0.5 sec b c".ljust(30) + "\r100\r" + REVERSE + text + RESET + RESET


def test_a_bar_frame_is_cut_to_the_terminal():
    frame = meter.bar(10, 3, 0, 0, "a-very-long-argument", done=False, elapsed=0)
    assert frame.endswith("\r0\r" + REVERSE + RESET + "0% 0:3=0s " + RESET)


def test_eta_status_takes_the_widest_format_that_fits():
    workers = [meter.Worker("local", "2", 8, running=2, completed=6)]
    header, line = meter.status(workers, 8, 12.0, "", 80)
    assert header.endswith("/Average seconds to complete")
    assert line == "local:2/6/100%/2.0s " + meter.ERASE_LINE
    many = [meter.Worker(f"node-{i}", "-", 8, running=1, completed=1) for i in range(1, 9)]
    header, line = meter.status(many, 16, 4.0, "", 80)
    assert header == "Computer:jobs running/jobs completed/%of started jobs"  # numbered, no seconds
    assert line == " ".join(f"{i}:1/1/12%" for i in range(1, 9)) + meter.ERASE_LINE
    header, line = meter.status(many * 10, 160, 4.0, "", 80)
    assert header == "Computer:jobs completed" and line.startswith("1:1 2:1 ")  # the last, even too wide


def test_eta_is_smoothed_and_not_moved_up_by_less_than_a_tenth():
    eta = meter.Eta()
    assert eta.compute(10, 0, 100.0) == (0.0, 0.0, 0)
    pct, avg, first = eta.compute(10, 1, 100.0)  # the first completion: no time measured yet
    assert (pct, avg, first) == (0.1, 0.0, 0)
    assert eta.compute(10, 2, 104.0) == (0.2, 2.0, 16)  # 8 left x 2 s
    assert eta.compute(10, 2, 106.0)[2] == 16  # 17 s would be a rise under 10 %: the last eta stays
    assert eta.compute(10, 2, 120.0)[2] == int(8 * (0.8 * 2.2 + 0.2 * 10.0))  # a larger one shows


def test_the_eta_header_lists_the_hosts_as_parallel_does(monkeypatch):
    monkeypatch.setattr(meter, "terminal_columns", lambda: 120)
    out = io.StringIO()
    m = meter.Meter("eta", out)
    m.begin([("node-2", False, 4), ("localhost", True, 2), ("node-1", False, 4)], total=10)
    assert out.getvalue() == ("\nComputers / CPU threads / Max jobs to run\n"
                              f"1:local / {os.cpu_count()} / 2\n2:node-1 / - / 4\n3:node-2 / - / 4\n\n"
                              "Computer:jobs running/jobs completed/%of started jobs/Average seconds to complete\n")
    m.job_started("node-1", ("a",))
    m.job_ended("node-1")
    m.draw(final=True)
    assert out.getvalue().endswith("\rETA: 0s Left: 9 AVG: 0.00s  local:0/0/0%/0.0s  node-1:0/1/100%/0.0s  "
                                   "node-2:0/0/0%/0.0s " + meter.ERASE_LINE + "\n")


def test_progress_draws_no_eta_and_needs_no_total():
    m = meter.Meter("progress", io.StringIO())
    assert not m.needs_total and meter.Meter("bar", io.StringIO()).needs_total
