"""pegpar.queuecheck: the whole queue checked before a run, and its quick reader."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pegpar import expand, queuecheck, queuetext, spec
from pegpar.errors import UserError
from pegpar.queuetext import Item


def slow(text: bytes, line: int = 1):
    return queuetext.parse_item(Item(0, len(text), len(text), line, text), "queue.yaml", spec.Anchors())


# --- the quick reader gives what the YAML reader gives, or nothing ----------------

QUICK = [
    "- echo hello\n",
    "- python train.py --lr {{lr}} --out runs/{{hostname}}   # a comment\n\n",
    "- 12\n",
    "- command: python run.py {{x}}\n  x: [1, 2.5, 08, 1e3, -3, a b, 'q, r', \"s\"]\n",
    "- command: ['echo {{lr}}', 'it''s']\n  lr: [0.1, 0.01]   # rates\n  wd: 5\n",
    "- command:\n    - python eval.py --x {{x}}\n  x:\n  - a\n  - 'b c'\n# next\n",
    "- command: x\n  # a comment\n\n  k: v\n",
]
SLOW = [
    "- echo a: b\n", "- 'quoted'\n", "- command: x\n  lr: [true]\n", "- command: x\n  lr: [~]\n",
    "- command: x\n  lr:\n", "- command: x\n  command: y\n", "- command: x\n   k: v\n",
    "- command: x\n  hostname: [a]\n", "- command: x\n  slots: 2\n", "- |\n  multi\n",
    "- command: x\n  k: [a, [b]]\n", "- command: [\"a\\tb\"]\n", "- echo a\r\n", "- command: &c x\n",
    "- command: x\n  k: [- a]\n", "- command: x\n  k: [a]b\n", "- command: x\n  k: v\n...\n",
]


@pytest.mark.parametrize("text", QUICK)
def test_the_quick_reader_reads_the_common_shapes_as_yaml_does(text):
    entry = queuecheck.quick_entry(text.encode(), "queue.yaml", 1)
    assert entry is not None and entry == slow(text.encode())


@pytest.mark.parametrize("text", SLOW)
def test_the_quick_reader_leaves_everything_else_to_the_yaml_reader(text):
    assert queuecheck.quick_entry(text.encode(), "queue.yaml", 1) is None


_PIECES = st.sampled_from(["a", "Z", "0", "1", ".", "5", "e", " ", "  ", ":", ": ", "#", " #", "-", "- ", "'",
                           "''", '"', "[", "]", ",", ", ", "{", "}", "{{x}}", "~", "\\", "&", "*", "é", "\u00a0",
                           "true", "null", "08", "1e3", "=", "/", "%", "@", "!", "|", ">", "?"])
_TEXT = st.lists(_PIECES, max_size=8).map("".join)
_KEYS = st.sampled_from(["command", "lr", "x", "x_1", "slots", "this", "a.b", "k"])
_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", _KEYS, _TEXT),
    st.builds(lambda k, vs: f"{k}: [{', '.join(vs)}]", _KEYS, st.lists(_TEXT, max_size=4)),
    st.builds(lambda k, vs, ind: f"{k}:\n" + "".join(f"{ind}- {v}\n" for v in vs).rstrip("\n"),
              _KEYS, st.lists(_TEXT, max_size=3), st.sampled_from(["  ", "    "])),
    st.just("# comment"), st.just(""))


@st.composite
def _items(draw):
    if draw(st.booleans()):
        return "- " + draw(_TEXT) + "\n" + ("\n" if draw(st.booleans()) else "")
    lines = draw(st.lists(_LINE, min_size=1, max_size=4))
    text = "- " + lines[0] + "\n" + "".join(
        "\n".join("  " + part if part and not part.startswith(" ") else part for part in line.split("\n")) + "\n"
        for line in lines[1:])
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_items())
def test_whatever_the_quick_reader_reads_the_yaml_reader_reads_the_same(text):
    """A property (hypothesis, 400 examples): the quick reader never gives an
    entry the YAML reader would not give, nor one it would refuse."""
    quick = queuecheck.quick_entry(text.encode(), "queue.yaml", 7)
    if quick is None:
        return
    try:
        expected = slow(text.encode(), 7)
    except UserError as err:
        raise AssertionError(f"quick read {quick} where YAML says {err}") from None
    assert quick == expected


# --- the whole-queue check -----------------------------------------------------

def nodes(text=None, local=2):
    entries = spec.parse_hosts(text, "hosts.yaml") if text else None
    return expand.subnodes(entries, local)


def write(tmp_path, text):
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    return str(path)


def test_every_bad_entry_is_listed_with_its_line(tmp_path):
    path = write(tmp_path, "- echo ok\n- echo {{nosuch}}\n- command: x\n  a: [[1]]\n- echo {{#if}}\n"
                           "- command: 'echo {{gpu}}'\n  slots: 3\n- echo fine {{hostname}}\n")
    errors = queuecheck.check(path, nodes("- hostname: [localhost]\n  gpu: [0]\n  slots: 2\n"))
    assert [err.where.split(":", 1)[1] for err in errors] == ["2", "4", "5", "6"]
    assert "unknown variable `nosuch`" in str(errors[0]) and "plain value" in str(errors[1])
    assert "template" in str(errors[2]) and "needs 3 slots" in str(errors[3])


def test_a_variable_on_some_sub_nodes_is_fine_in_queue_mode_not_in_broadcast(tmp_path):
    path = write(tmp_path, "- echo {{gpu}}\n- echo {{#if extra}}x{{/if}}\n")
    fleet = nodes("- hostname: [localhost]\n  gpu: [0]\n- hostname: [127.0.0.1]\n")
    assert queuecheck.check(path, fleet) == []
    (err,) = queuecheck.check(path, fleet, every_node=True)
    assert err.where.endswith(":1") and "gpu" in str(err)


def test_a_collision_with_a_host_parameter_is_an_error(tmp_path):
    path = write(tmp_path, "- command: 'echo {{gpu}}'\n  gpu: [1]\n")
    (err,) = queuecheck.check(path, nodes("- hostname: [localhost]\n  gpu: [0]\n"))
    assert "host parameter" in str(err)


def test_at_most_ten_errors_and_a_sign_of_more(tmp_path):
    path = write(tmp_path, "".join(f"- echo {{{{bad{i}}}}}\n" for i in range(30)))
    errors = queuecheck.check(path, nodes())
    assert len(errors) == queuecheck.MAX_LISTED + 1


def test_aliases_and_a_flow_queue_are_checked_too(tmp_path):
    path = write(tmp_path, "- command: 'echo {{lr}}'\n  lr: &l [1]\n- command: 'echo {{lr}} {{no}}'\n  lr: *l\n")
    (err,) = queuecheck.check(path, nodes())
    assert err.where.endswith(":3") and "`no`" in str(err)
    path = write(tmp_path, "[echo a, 'echo {{no}}']\n")
    (err,) = queuecheck.check(path, nodes())
    assert "`no`" in str(err)


def test_a_huge_sweep_is_checked_without_expanding_it(tmp_path):
    values = ", ".join(str(v) for v in range(32))
    text = "- command: 'run {{a}} {{b}} {{c}} {{d}} {{e}} {{f}}'\n" + "".join(f"  {k}: [{values}]\n"
                                                                               for k in "abcdef")
    path = write(tmp_path, text)
    started = time.monotonic()
    assert queuecheck.check(path, nodes()) == []  # 32^6 = 10^9 combinations
    assert time.monotonic() - started < 30  # a hang guard, not a timing assertion


def test_fifty_thousand_entries_are_all_read(tmp_path):
    kinds = ["- python run.py --seed {i} {{{{hostname}}}}\n",
             "- command: python train.py --lr {{{{lr}}}} --i {i}\n  lr: [0.1, 0.01]   # rates\n  seed: [1, 2]\n",
             "- command:\n    - 'python eval.py --x {{{{x}}}} --i {i}'\n  x: [a, b]\n"]
    text = "".join(kinds[i % 3].format(i=i) for i in range(50_000)) + "- echo {{missing}}\n"
    path = write(tmp_path, text)
    (err,) = queuecheck.check(path, nodes())
    assert err.where == f"{path}:{text.count(chr(10))}"


def test_items_are_cut_alike_whatever_the_chunks(tmp_path, monkeypatch):
    text = "# head\n- a\n-\n  b\n- c\r\n-\tx\n--- not an item\n  - nested\n- " + "y" * 40 + "\n- last\n-"
    path = tmp_path / "q.yaml"
    path.write_bytes(text.encode())
    with open(path, "rb") as f:
        first = queuetext.Scanner(f, str(path)).head()
        whole = list(queuecheck._split(f, first))
    assert [t for _, _, t in whole] == [b"- a\n", b"-\n  b\n", b"- c\r\n", b"-\tx\n--- not an item\n  - nested\n",
                                        b"- " + b"y" * 40 + b"\n", b"- last\n", b"-"]
    assert [(at, line) for at, line, _ in whole] == [(text.index("- a"), 2), (text.index("-\n  b"), 3),
                                                     (text.index("- c"), 5), (text.index("-\tx"), 6),
                                                     (text.index("- y"), 9), (text.index("- last"), 10),
                                                     (len(text) - 1, 11)]
    for chunk in (1, 2, 3, 5, 7):
        monkeypatch.setattr(queuecheck, "_CHUNK", chunk)
        with open(path, "rb") as f:
            assert list(queuecheck._split(f, first)) == whole
    monkeypatch.setattr(queuetext, "MAX_ENTRY_BYTES", 30)
    for chunk in (1, 4, 1000):
        monkeypatch.setattr(queuecheck, "_CHUNK", chunk)
        with open(path, "rb") as f:
            cut = list(queuecheck._split(f, first))
        assert [(at, line) for at, line, _ in cut] == [(at, line) for at, line, _ in whole]
        assert [t is None for _, _, t in cut] == [False, False, False, True, True, False, False]
