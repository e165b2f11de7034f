"""pegpar.expand: ordered expansion, sub-nodes, remainders, canonical form."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pegpar import expand, spec
from pegpar.errors import UserError
from pegpar.expand import Job, SubNode
from pegpar.spec import QueueEntry, Source

SRC = Source("queue.yaml", 1)


def hosts(text: str):
    return expand.subnodes(spec.parse_hosts(text, "hosts.yaml"), 4)


def entry(text: str) -> QueueEntry:
    (e,) = spec.parse_queue(text, "queue.yaml")
    return e


# --- sub-nodes -----------------------------------------------------------------

def test_seed_quiz_hosts():
    nodes = hosts("- hostname: [node-1, node-2]\n  laziness: [1]\n- hostname: [node-3]\n  laziness: [2]\n")
    assert [(n.name, n.host, n.params, n.local) for n in nodes] == [
        ("node-1 (laziness=1)", "node-1", (("laziness", 1),), False),
        ("node-2 (laziness=1)", "node-2", (("laziness", 1),), False),
        ("node-3 (laziness=2)", "node-3", (("laziness", 2),), False),
    ]
    assert [str(n.source) for n in nodes] == ["hosts.yaml:1", "hosts.yaml:1", "hosts.yaml:3"]


def test_product_order_hostname_slowest_then_params_in_file_order():
    nodes = hosts("- hostname: [a, b]\n  gpu: [0, 1]\n  mode: [x, y]\n")
    assert [n.name for n in nodes] == [
        "a (gpu=0,mode=x)", "a (gpu=0,mode=y)", "a (gpu=1,mode=x)", "a (gpu=1,mode=y)",
        "b (gpu=0,mode=x)", "b (gpu=0,mode=y)", "b (gpu=1,mode=x)", "b (gpu=1,mode=y)",
    ]


def test_hostname_template_uses_the_entry_params():
    nodes = hosts("- hostname: ['{{ prefix }}-1', 'u@{{ prefix }}-2']\n  prefix: [gpu, cpu]\n  on: [true]\n")
    assert [(n.host, n.name) for n in nodes] == [
        ("gpu-1", "gpu-1 (prefix=gpu,on=true)"), ("cpu-1", "cpu-1 (prefix=cpu,on=true)"),
        ("u@gpu-2", "u@gpu-2 (prefix=gpu,on=true)"), ("u@cpu-2", "u@cpu-2 (prefix=cpu,on=true)"),
    ]


def test_valid_hostname_forms_and_local_names():
    nodes = hosts("- user@node-1\n- ssh://me@host.example:2222\n- my_alias\n- 10.0.0.7\n- '[fe80::1]'\n"
                  "- localhost\n- 127.0.0.1\n- '::1'\n- user@localhost\n")
    assert [n.local for n in nodes] == [False] * 5 + [True] * 3 + [False]
    assert nodes[1].host == "ssh://me@host.example:2222"


def test_no_hosts_file_gives_local_slots():
    nodes = expand.subnodes(None, 3)
    assert nodes == tuple(SubNode(f"localhost/{i}", "localhost", (), True, slot=i) for i in (1, 2, 3))
    assert nodes[0].variables() == {"hostname": "localhost"}
    with pytest.raises(UserError):
        expand.subnodes(None, 0)


@pytest.mark.parametrize("host", ["node 1", "node;rm -rf ~", "$(reboot)", "a`b`", "a|b", "a&b", "-oProxyCommand=x",
                                  "a'b", 'a"b', "a>b", "a\\b", "a*", "ü-node"])
def test_unsafe_hostnames_are_rejected(host):
    with pytest.raises(UserError, match="invalid hostname") as info:
        hosts(f"- ok\n- {{hostname: [{host!r}]}}\n".replace("\\\\", "\\"))
    assert info.value.where == "hosts.yaml:2"


def test_unsafe_rendered_hostname_is_rejected():
    with pytest.raises(UserError, match="invalid hostname"):
        hosts("- hostname: ['{{ p }}']\n  p: ['a b']\n")


@pytest.mark.parametrize("text, names", [
    ("- node-1\n- node-1\n", ["node-1", "node-1 #2"]),
    ("- hostname: [n, n]\n", ["n", "n #2"]),
    ("- hostname: [n]\n  gpu: [0, 0]\n", ["n (gpu=0)", "n (gpu=0) #2"]),
    ("- hostname: [n]\n  gpu: [0]\n- hostname: [m, n, n]\n  gpu: [0]\n",
     ["n (gpu=0)", "m (gpu=0)", "n (gpu=0) #2", "n (gpu=0) #3"]),
])
def test_duplicate_subnodes_are_runners_of_their_own_named_apart(text, names):
    """As in Pegasus: the same host and parameters twice is two runners there."""
    nodes = hosts(text)
    assert [n.name for n in nodes] == names
    assert len({n.host for n in nodes if n.name.startswith("n")}) == 1


def test_hostname_template_cannot_use_hostname():
    with pytest.raises(UserError, match="`hostname`"):
        hosts("- hostname: ['{{ hostname }}x']\n")


def test_subnode_and_job_variables():
    node = SubNode("n (gpu=0)", "n", (("gpu", 0),), False)
    job = Job("x", (("lr", 0.1),), SRC)
    assert node.variables() == {"gpu": 0, "hostname": "n"}
    assert job.variables() == {"lr": 0.1}


# --- jobs, count, remainder ------------------------------------------------------

def test_seed_quiz_jobs_in_file_order():
    e = entry("- command: ['first {{ low }} {{ high }}', second]\n  low: [1, 2]\n  high: [3, 4]\n")
    got = [(j.command, j.params) for j in expand.jobs(e)]
    assert got == [(c, (("low", lo), ("high", hi))) for c in ("first {{ low }} {{ high }}", "second")
                   for lo in (1, 2) for hi in (3, 4)]
    assert expand.count(e.dims) == 8


def test_command_is_one_dimension_at_its_file_position():
    e = entry("- n: [1, 2]\n  command: [a, b]\n")
    assert [(j.command, j.params) for j in expand.jobs(e)] == [
        ("a", (("n", 1),)), ("b", (("n", 1),)), ("a", (("n", 2),)), ("b", (("n", 2),))]


def test_plain_entry_is_one_plain_job():
    e = entry("- echo hi\n")
    (job,) = expand.jobs(e)
    assert job == Job("echo hi", (), Source("queue.yaml", 1), plain=True)
    assert expand.first_job(e) == job
    assert expand.remainder(e.dims) == []


def test_huge_sweep_is_counted_and_iterated_lazily_never_materialized():
    values = tuple(range(1000))
    dims = (("command", ("x",)), ("a", values), ("b", values), ("c", values))
    e = QueueEntry(dims, SRC)
    assert expand.count(dims) == 10 ** 9
    first_three = list(itertools.islice(expand.jobs(e), 3))
    assert [j.params for j in first_three] == [(("a", 0), ("b", 0), ("c", c)) for c in (0, 1, 2)]
    rest = expand.remainder(dims)
    assert len(rest) == 3 and sum(expand.count(p) for p in rest) == 10 ** 9 - 1


def test_remainder_shape():
    dims = (("command", ("x", "y")), ("a", (1, 2, 3)), ("b", (4,)), ("c", (5, 6)))
    assert expand.remainder(dims) == [
        (("command", ("x",)), ("a", (1,)), ("b", (4,)), ("c", (6,))),
        (("command", ("x",)), ("a", (2, 3)), ("b", (4,)), ("c", (5, 6))),
        (("command", ("y",)), ("a", (1, 2, 3)), ("b", (4,)), ("c", (5, 6))),
    ]


small_dims = st.lists(st.integers(1, 3), min_size=1, max_size=4).map(
    lambda sizes: (("command", tuple(f"c{i}" for i in range(sizes[0]))),) +
    tuple((f"p{k}", tuple(range(n))) for k, n in enumerate(sizes[1:])))


@settings(deadline=None)
@given(small_dims)
def test_remainder_lists_the_rest_of_the_product_in_order(dims):
    whole = list(expand.jobs(QueueEntry(dims, SRC)))
    rest = [job for part in expand.remainder(dims) for job in expand.jobs(QueueEntry(part, SRC))]
    assert rest == whole[1:]
    assert len(expand.remainder(dims)) <= len(dims)


@settings(deadline=None)
@given(small_dims)
def test_taking_first_jobs_repeatedly_walks_the_whole_product(dims):
    products, taken = [dims], []
    while products:
        taken.append(expand.first_job(QueueEntry(products[0], SRC)))
        products = expand.remainder(products[0]) + products[1:]
    assert taken == list(expand.jobs(QueueEntry(dims, SRC)))


# --- canonical form and YAML round trips -------------------------------------------

def test_job_canonical_forms():
    assert Job("echo hi", (), SRC, plain=True).canonical() == "echo hi"
    assert Job("run {{ n }}", (("n", 1), ("m", "x")), SRC).canonical() == {"command": ["run {{ n }}"], "n": [1],
                                                                            "m": ["x"]}


def test_canonical_entry():
    assert expand.canonical_entry((("command", ("echo hi",)),), True) == "echo hi"
    assert expand.canonical_entry((("n", (1, 2)), ("command", ("a",))), False) == {"n": [1, 2], "command": ["a"]}


def test_dump_is_readable():
    text = expand.dump_yaml_items(["echo hi", {"command": ["run {{ lr }}"], "lr": [0.1, 0.01]},
                                  {"command": ["line 1\nline 2\n"], "n": [1]}])
    assert text == ("- echo hi\n"
                    "- command: ['run {{ lr }}']\n  lr: [0.1, 0.01]\n"
                    "- command:\n  - |\n    line 1\n    line 2\n  n: [1]\n")
    assert expand.dump_yaml_items([]) == ""


TRICKY = ["it's", 'say "hi"', "a # b", "key: value", "- dash", "{brace}", "[list]", "@at", "%pct", "`tick`",
          "*star", "&amp", "!bang", "|pipe", ">gt", "ü 日本", "line1\nline2", "trailing \nspace", "\ttab",
          "true", "false", "True", "yes", "no", "on", "null", "~", "", " ", "08", "1e3", "1e-05", "0.5", "3",
          "0x1F", "1:30", "2001-12-14", "=", "<<", "?", ":", ",", "a, b", "x\n", "\n", "\\", "\x7f", "\u2028",
          "a\x85b", "x\u2029\ny"]


@pytest.mark.parametrize("value", TRICKY)
def test_tricky_strings_round_trip_as_commands_and_values(value):
    objs = [{"command": ["echo " + value if value.strip() else "x"], "v": [value]}]
    if value.strip():
        objs.append(value)
    text = expand.dump_yaml_items(objs)
    back = [expand.canonical_entry(e.dims, e.plain) for e in spec.parse_queue(text, "q")]
    assert back == objs and [type(v) for v in back[0]["v"]] == [str]


def test_typed_values_round_trip_with_their_types():
    objs = [{"command": ["x"], "v": [1, -2, 0.5, 1e-05, 1e+20, 3.0, True, False]}]
    back = [expand.canonical_entry(e.dims, e.plain) for e in
            spec.parse_queue(expand.dump_yaml_items(objs), "q")]
    assert back == objs
    assert [type(v) for v in back[0]["v"]] == [int, int, float, float, float, float, bool, bool]


scalars = st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
                    st.integers(), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False))
names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda n: n not in ("command", "this", "else", "true", "false", "null", "undefined"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s), min_size=1, max_size=2),
       st.dictionaries(names, st.lists(scalars, min_size=1, max_size=3), max_size=3))
def test_dump_round_trips(commands, params):
    commands = [c for c in commands if all(ch.isprintable() or ch in "\n\t" for ch in c)] or ["x"]
    obj = {"command": commands, **params}
    text = expand.dump_yaml_items([obj, commands[0]])
    entries = spec.parse_queue(text, "q")
    assert [expand.canonical_entry(e.dims, e.plain) for e in entries] == [obj, commands[0]]
    for value, back in zip(itertools.chain(*params.values()),
                           itertools.chain(*(v for k, v in entries[0].dims if k != "command"))):
        assert type(value) is type(back)


# --- variables ---------------------------------------------------------------------

def test_check_collisions():
    nodes = hosts("- hostname: [a]\n  gpu: [0]\n")
    expand.check_collisions(entry("- command: [x]\n  lr: [1]\n"), nodes)
    with pytest.raises(UserError, match="`gpu`.*a \\(gpu=0\\)") as info:
        expand.check_collisions(entry("- command: [x]\n  gpu: [1]\n"), nodes)
    assert info.value.where == "queue.yaml:1"
    with pytest.raises(UserError, match="`hostname`"):
        expand.check_collisions(entry("- command: [x]\n  hostname: [h]\n"), expand.subnodes(None, 1))


def test_render_uses_job_and_subnode_variables_verbatim():
    node = hosts("- hostname: [gpu-box]\n  gpu: [3]\n")[0]
    job = next(expand.jobs(entry("- command: ['CUDA_VISIBLE_DEVICES={{ gpu }} run --x \"{{ x }}\" on {{ hostname }}']\n"
                                 "  x: ['a&b<c>']\n")))
    assert expand.render(job, node) == 'CUDA_VISIBLE_DEVICES=3 run --x "a&b<c>" on gpu-box'


def test_render_error_names_the_queue_line():
    job = next(expand.jobs(spec.parse_queue("- ok\n- echo {{ nope }}\n", "queue.yaml")[1]))
    with pytest.raises(UserError, match="`nope`") as info:
        expand.render(job, expand.subnodes(None, 1)[0])
    assert info.value.where == "queue.yaml:2"
