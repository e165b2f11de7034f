"""The pure parts of GNU parallel's command line: options, -j forms, quoting, records."""

import io
import os
import threading

import pytest

from pegpar import parallelargs, replacement
from pegpar.errors import UserError


@pytest.mark.parametrize("text,cores,expected", [
    ("4", 8, 4), ("50%", 8, 4), ("200%", 2, 4), ("+2", 8, 10), ("-2", 8, 6), ("-20", 8, 1),
    ("0", 8, parallelargs.MAX_JOBS), ("1%", 2, 1), ("1000", 2, parallelargs.MAX_JOBS),
])
def test_jobs_in_parallels_forms(text, cores, expected):
    assert parallelargs.jobs_count(text, cores) == expected


@pytest.mark.parametrize("text", ["", "x", "4x", "%", "--1"])
def test_jobs_that_are_no_number(text):
    with pytest.raises(UserError):
        parallelargs.jobs_count(text, 4)


def test_options_then_command_then_sources():
    spec = parallelargs.parse(["-kq", "-n2", "--colsep=,", "--trim", "lr", "-j", "3", "echo", "-n", "{}",
                               ":::", "a", "b", "::::+", "f", "-a", "x"])
    assert (spec.keep_order, spec.quote, spec.max_args, spec.colsep, spec.trim, spec.jobs) == \
        (True, True, 2, ",", "lr", "3")
    assert spec.command == ["echo", "-n", "{}"]
    assert spec.sources == [("args", ["a", "b"], False), ("file", "f", True), ("file", "-a", False),
                            ("file", "x", False)]
    assert not spec.reads_stdin


@pytest.mark.parametrize("words,problem", [
    (["--pipe", "wc"], "--pipe is not supported"),
    (["-X", "echo"], "-X is not supported"),
    (["-n"], "-n needs a value"),
    (["-n", "x", "echo"], "needs a number"),
    (["--trim", "q", "echo"], "--trim"),
    (["--colsep", "(", "echo"], "not a regular expression"),
    (["echo", "::::"], "needs a file name"),
])
def test_bad_command_lines(words, problem):
    with pytest.raises(UserError, match=problem.replace("(", r"\(")):
        parallelargs.parse(words)


def test_perl_expressions_are_refused():
    with pytest.raises(UserError, match="Perl"):
        replacement.compile_command(["echo", "{=", "s/a/b/", "=}"])


@pytest.mark.parametrize("value,quoted", [
    ("", "''"), ("abc-_.+/9", "abc-_.+/9"), ("a b", "'a b'"), ("it's", "'it'\"'\"'s'"),
    ("'", "\"'\""), ("''x", "\"''\"'x'"), ("é", "'é'"), ("a\nb", "'a\nb'"),
])
def test_quoting_as_parallel_quotes(value, quoted):
    assert replacement.quote(value) == quoted


def test_records_arrive_as_they_are_written():
    """A record is given as soon as its separator arrives, not at the end of the input."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "rb")
    got = []
    records = parallelargs.split(stream, "\n")
    os.write(write_fd, b"one\ntw")
    got.append(next(records))
    assert got == ["one"]
    done = threading.Event()

    def rest():
        got.extend(records)
        done.set()

    threading.Thread(target=rest, daemon=True).start()
    os.write(write_fd, b"o\nthree")
    os.close(write_fd)
    assert done.wait(10)
    assert got == ["one", "two", "three"]


def test_a_multi_byte_separator_and_bytes_that_are_not_utf8():
    records = list(parallelargs.split(io.BufferedReader(io.BytesIO(b"a::\xff::c")), "::"))
    assert records == ["a", "\udcff", "c"]
    assert records[1].encode("utf-8", "surrogateescape") == b"\xff"


@pytest.mark.parametrize("text,expected", [("1", ("soon", "fail", 1, False)), ("2", ("now", "fail", 1, False)),
                                           ("0", None), ("now,done=3", ("now", "done", 3, False)),
                                           ("soon,fail=20%", ("soon", "fail", 20, True))])
def test_halt_forms(text, expected):
    assert parallelargs.parse_halt(text) == expected


@pytest.mark.parametrize("text", ["soon,fail=0", "now,done=0%", "soon,fail=101%", "soon,fail", "later,fail=1"])
def test_bad_halt_forms_are_errors(text):
    with pytest.raises(UserError):
        parallelargs.parse_halt(text)
