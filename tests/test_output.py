"""What the user sees: prefixes, colours, whole lines, and the progress line."""

from __future__ import annotations

import io

from pegpar.output import Printer, Tail, prefix


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prefix_is_plain_without_colour_and_coloured_on_a_terminal():
    assert prefix("node-1 (gpu=0)", 0, False) == "[node-1 (gpu=0)]"
    assert prefix("node-1", 0, True) == "\033[32m[node-1]\033[0m"


def test_no_colour_and_no_progress_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, err = io.StringIO(), io.StringIO()
    p = Printer(out, err)
    p.status("[1/2 done]")
    p.job_lines("node-1", ["a", "b"])
    assert out.getvalue() == "[node-1] a\n[node-1] b\n"


def test_no_color_turns_colour_off_on_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    Printer(out, Terminal(), progress=False).job_lines("node-1", ["a"])
    assert out.getvalue() == "[node-1] a\n"


def test_job_lines_go_above_the_progress_line(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    p = Printer(out, out)
    p.status("[0/1 done]")
    p.job_lines("node-1", ["hello"])
    p.clear_status()
    # erase the status, write the line whole, draw the status again, erase at the end
    assert out.getvalue() == ("\r\033[K[0/1 done]" "\r\033[K" "[node-1] hello\n" "[0/1 done]" "\r\033[K")


def test_no_progress_flag_keeps_a_terminal_clean(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    p = Printer(out, out, progress=False)
    p.status("[0/1 done]")
    p.job_lines("node-1", ["x"])
    assert out.getvalue() == "[node-1] x\n"


def test_tail_gives_whole_lines_and_keeps_a_last_line_without_newline(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"")
    t = Tail(str(path))
    with open(path, "ab") as f:
        f.write(b"one\ntw")
        f.flush()
        assert t.lines() == ["one"]
        f.write("o\nthré".encode())
        f.flush()
        assert t.lines() == ["two"]
    assert t.lines(final=True) == ["thré"]
