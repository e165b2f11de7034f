"""pegpar.spec: hosts.yaml and queue.yaml -> validated entries with FILE:LINE."""

from __future__ import annotations

import time

import pytest

from pegpar import spec
from pegpar.errors import UserError
from pegpar.spec import HostEntry, QueueEntry, Source


def queue(text: str):
    return spec.parse_queue(text, "queue.yaml")


def error(fn, *args) -> UserError:
    with pytest.raises(UserError) as info:
        fn(*args)
    return info.value


# --- queue.yaml --------------------------------------------------------------

def test_bare_commands_are_plain_entries_with_their_lines():
    entries = queue("# a comment\n- echo one\n\n- echo two\n")
    assert entries == (
        QueueEntry((("command", ("echo one",)),), Source("queue.yaml", 2), plain=True),
        QueueEntry((("command", ("echo two",)),), Source("queue.yaml", 4), plain=True),
    )


def test_map_keeps_every_key_in_file_order_command_included():
    (entry,) = queue("- lr: [0.1, 0.01]\n  command: [a, b]\n  bs: 8\n")
    assert entry.dims == (("lr", (0.1, 0.01)), ("command", ("a", "b")), ("bs", (8,)))
    assert entry.params == (("lr", (0.1, 0.01)), ("bs", (8,)))
    assert entry.commands == ("a", "b")
    assert not entry.plain
    assert entry.source == Source("queue.yaml", 1)


def test_block_list_and_block_scalar_commands():
    (entry,) = queue("- command:\n    - |\n      echo a\n      echo b\n    - echo c\n  n:\n    - 1\n")
    assert entry.commands == ("echo a\necho b\n", "echo c")
    assert entry.params == (("n", (1,)),)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "---\n"])
def test_empty_or_comment_only_file_is_an_empty_queue(text):
    assert queue(text) == ()


def test_first_line_shifts_reported_lines_for_a_slice():
    (entry,) = spec.parse_queue("- command: [a]\n  n: [1]\n", "queue.yaml", first_line=40)
    assert entry.source == Source("queue.yaml", 40)
    err = error(spec.parse_queue, "- command: [a]\n  n: []\n", "queue.yaml", 40)
    assert err.where == "queue.yaml:41"


def test_values_keep_their_type_only_when_they_print_as_written():
    (entry,) = queue("- command: [x]\n"
                     "  v: [8, -3, 0.5, 1.0, true, false, '8', 08, 3.10, 1e3, 1e-5, 0x1F, +1, True, yes, on, "
                     "1:30, 2001-12-14, ~x, .inf]\n")
    values = dict(entry.params)["v"]
    assert values == (8, -3, 0.5, 1.0, True, False, "8", "08", "3.10", "1e3", "1e-5", "0x1F", "+1", "True",
                      "yes", "on", "1:30", "2001-12-14", "~x", ".inf")
    assert [type(v) for v in values[:7]] == [int, int, float, float, bool, bool, str]
    assert all(spec.scalar_text(v) in ("8", "-3", "0.5", "1.0", "true", "false") or isinstance(v, str)
               for v in values)


def test_non_string_commands_are_taken_as_written():
    entries = queue("- true\n- 42\n- command: [false, 1.50]\n")
    assert [e.commands for e in entries] == [("true",), ("42",), ("false", "1.50")]


def test_explicit_tags():
    (entry,) = queue("- command: [x]\n  a: [!!str 1, !!int 7, ! 2]\n")
    assert dict(entry.params)["a"] == ("1", 7, "2")


def test_queue_entry_from_object():
    source = Source("journal", 3)
    assert spec.queue_entry_from_object("echo hi", source) == QueueEntry((("command", ("echo hi",)),), source, True)
    entry = spec.queue_entry_from_object({"command": ["a {{ n }}"], "n": [1, 2], "m": "x"}, source)
    assert entry.dims == (("command", ("a {{ n }}",)), ("n", (1, 2)), ("m", ("x",)))
    with pytest.raises(UserError, match="nested"):
        spec.queue_entry_from_object({"command": ["a"], "n": [[1]]}, source)
    with pytest.raises(UserError, match="no `command`"):
        spec.queue_entry_from_object({"n": [1]}, source)
    with pytest.raises(UserError):
        spec.queue_entry_from_object(["a"], source)


@pytest.mark.parametrize("text, line, message", [
    ("- a: b: c\n", 1, "invalid YAML"),
    ("- echo a: b\n", 1, "invalid parameter name 'echo a'"),
    ("echo hello\n", 1, "must be a YAML list"),
    ("command: [a]\n", 1, "must be a YAML list"),
    ("- ok\n- [a, b]\n", 2, "not a list"),
    ("- ok\n- ~\n", 2, "empty entry"),
    ("- n: [1]\n", 1, "no `command`"),
    ("- {}\n", 1, "no `command`"),
    ("- command: []\n", 1, "empty list"),
    ("- command: [a]\n  n: []\n", 2, "empty list"),
    ("- command: [a]\n  n:\n", 2, "has no value"),
    ("- command: [a]\n  n: [[1, 2]]\n", 2, "plain value"),
    ("- command: [a]\n  n: [{a: 1}]\n", 2, "plain value"),
    ("- command: [a]\n  n: {a: 1}\n", 2, "not a map"),
    ("- command: ['  ']\n", 1, "empty command"),
    ("- command: [a]\n  command: [b]\n", 2, "twice"),
    ("- command: [a]\n  1x: [1]\n", 2, "invalid parameter name"),
    ("- command: [a]\n  my var: [1]\n", 2, "invalid parameter name"),
    ("- command: [a]\n  this: [1]\n", 2, "invalid parameter name"),
    ("- command: [a]\n  n: !!binary aGk=\n", 2, "unsupported YAML tag"),
    ("- a\n---\n- b\n", 2, "more than one YAML document"),
    ("- 'unterminated\n", 2, "starts at line 1"),
    ("- command: [a, b\n", 2, "invalid YAML"),
    ("- ok\n- bad\x01char\n", 2, "not allowed"),
    ("- x\n\t- y\n", 2, "invalid YAML"),
    ("- *cmd\n", 1, "no anchor &cmd before it"),
    ("- command: [a]\n  n: &l [1]\n  m: [*l]\n", 3, "plain value"),
    ("- &e {command: [a]}\n- command: [*e]\n", 2, "plain value"),
])
def test_queue_errors_name_file_and_line(text, line, message):
    err = error(queue, text)
    assert err.where == f"queue.yaml:{line}"
    assert message in err.message
    assert "\n" not in str(err)


def test_colon_space_mistake_gets_a_quoting_hint():
    assert "quote" in error(queue, "- echo a: b\n").hint


def test_alias_bomb_is_refused_at_the_first_alias():
    lines = ["- command: [x]", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  {c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]" for p, c in zip("abcdefgh", "bcdefghi")]
    started = time.monotonic()
    err = error(queue, "\n".join(lines) + "\n")
    assert "plain value" in err.message and err.where == "queue.yaml:3"
    assert time.monotonic() - started < 30  # a hang guard, not a timing assertion


def test_aliases_share_values_between_entries_and_within_one():
    entries = queue("- command: ['echo {{lr}}']\n  lr: &lrs [0.1, 0.01]\n  wd: &one 1\n"
                    "- command: [run]\n  lr: *lrs\n  wd: [*one, 2]\n"
                    "- &e {command: [x], k: [a]}\n- *e\n")
    assert [dict(e.dims) for e in entries] == [
        {"command": ("echo {{lr}}",), "lr": (0.1, 0.01), "wd": (1,)},
        {"command": ("run",), "lr": (0.1, 0.01), "wd": (1, 2)},
        {"command": ("x",), "k": ("a",)}, {"command": ("x",), "k": ("a",)}]
    assert [e.source.line for e in entries] == [1, 4, 7, 8]


def test_anchors_carry_from_one_slice_of_a_file_to_the_next():
    anchors = spec.Anchors()
    spec.parse_queue("- command: [a]\n  lr: &lrs [1, 2]\n", "queue.yaml", 1, anchors)
    assert anchors.defined == ["lrs"]
    anchors.defined = []
    (entry,) = spec.parse_queue("- command: [b]\n  lr: *lrs\n", "queue.yaml", 3, anchors)
    assert dict(entry.dims)["lr"] == (1, 2) and anchors.defined == []


def test_aliases_that_bring_in_too_many_values_are_refused_quickly():
    text = "- command: [x]\n  v: &v [" + ", ".join(map(str, range(1000))) + "]\n"
    text += "".join("- {command: [x], v: *v}\n" for _ in range(spec.MAX_ALIASED // 1000 + 1))
    started = time.monotonic()
    err = error(queue, text)
    assert "aliases bring more than" in err.message and err.where.startswith("queue.yaml:")
    assert time.monotonic() - started < 60  # a hang guard, not a timing assertion


def test_nulls_render_as_pegasus_renders_them():
    (entry,) = queue("- command: [a]\n  n: [1, ~, null, NULL]\n  m:\n    - \n  k: ~\n")
    assert dict(entry.dims) == {"command": ("a",), "n": (1, "~", "null", "NULL"), "m": ("~",), "k": ("~",)}
    (host,) = spec.parse_hosts("- hostname: [a]\n  gpu: [~]\n", "hosts.yaml")
    assert host.params == (("gpu", ("~",)),)


def test_deep_nesting_is_an_error_not_a_crash():
    err = error(queue, "[" * 100_000 + "]" * 100_000)
    assert err.where == "queue.yaml:1"


# --- files -------------------------------------------------------------------

def test_missing_queue_file_hints_how_to_create_one(tmp_path):
    err = error(spec.load_queue, str(tmp_path / "queue.yaml"))
    assert err.where == str(tmp_path / "queue.yaml")
    assert "echo '- echo hello' >" in err.hint


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_bytes(b"- echo ok\n- echo \xff\xfe\n")
    err = error(spec.load_queue, str(path))
    assert err.where == f"{path}:2" and "UTF-8" in err.message


def test_directory_instead_of_file(tmp_path):
    assert "directory" in error(spec.load_queue, str(tmp_path)).message


def test_load_queue_reads_the_file(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("- echo ü\n", encoding="utf-8")
    assert spec.load_queue(str(path))[0].commands == ("echo ü",)


# --- hosts.yaml --------------------------------------------------------------

def test_missing_hosts_file_means_local(tmp_path):
    assert spec.load_hosts(str(tmp_path / "hosts.yaml")) is None


def test_hosts_bare_and_parametrized():
    entries = spec.parse_hosts("- node-1\n- user@node-2\n- hostname: ['{{ prefix }}-3', node-4]\n"
                               "  prefix: [gpu]\n  container: [c0, c1]\n", "hosts.yaml")
    assert entries == (
        HostEntry(("node-1",), (), Source("hosts.yaml", 1)),
        HostEntry(("user@node-2",), (), Source("hosts.yaml", 2)),
        HostEntry(("{{ prefix }}-3", "node-4"), (("prefix", ("gpu",)), ("container", ("c0", "c1"))),
                  Source("hosts.yaml", 3)),
    )


def test_load_hosts_reads_the_file(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text("- ssh://me@h:2222\n")
    assert spec.load_hosts(str(path)) == (HostEntry(("ssh://me@h:2222",), (), Source(str(path), 1)),)


@pytest.mark.parametrize("text, where, message", [
    ("", "hosts.yaml", "no hosts"),
    ("# nobody\n", "hosts.yaml", "no hosts"),
    ("[]\n", "hosts.yaml", "no hosts"),
    ("node-1: {}\n", "hosts.yaml:1", "must be a YAML list"),
    ("- node-1\n- container: [a]\n", "hosts.yaml:2", "no `hostname`"),
    ("- hostname: []\n", "hosts.yaml:1", "empty list"),
    ("- hostname: [a]\n  gpu: [[0, 1]]\n", "hosts.yaml:2", "plain value"),
])
def test_hosts_errors(text, where, message):
    err = error(spec.parse_hosts, text, "hosts.yaml")
    assert err.where == where and message in err.message


def test_scalar_text_and_read_plain():
    assert [spec.scalar_text(v) for v in (True, False, 3, 0.5, "x")] == ["true", "false", "3", "0.5", "x"]
    assert [spec.read_plain(t) for t in ("3", "08", "true", "True", "~", "", "0.5", "1e-05", "a")] == \
        [3, "08", True, "True", None, None, 0.5, 1e-05, "a"]
