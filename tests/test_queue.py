"""pegpar.queue: pops keep the file as written, read only the head, lock, add."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml

from pegpar import queue, queuetext
from pegpar.errors import UserError
from pegpar.queue import QueueFile, unconsume
from pegpar.queuetext import check_text

HEADER = """\
# experiments for the paper
---

"""
# Each chunk is one entry followed by what stays with the rest of the file.
ENTRIES = [
    """- 'echo "single" quoted # not a comment'\n\n""",
    """- "echo \\"double\\" {{ '{{' }}"   # trailing comment\n""",
    """- |\n  set -e\n  # part of the script, not a comment\n  make all\n\n\n""",
    """# about the sweep\n- command:\n    - >-\n      python train.py\n      --lr {{ lr }}\n  lr: [0.1, 0.01]\n\n""",
    """- plain   \n# trailing comment block\n\n# kept\n""",
]


def write(path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def accept_all(job) -> None:
    pass


def take_all(q: QueueFile, n: int = 10 ** 6):
    result = q.take(n, accept_all)
    assert result is not None
    jobs, err = result
    assert err is None
    return jobs


def flat(job):
    return job.command, tuple(job.params)


@pytest.fixture
def qpath(tmp_path):
    return tmp_path / "queue.yaml"


def test_pops_keep_every_other_byte(qpath):
    write(qpath, HEADER + "".join(ENTRIES))
    q = QueueFile(str(qpath))
    [job] = q.take(1, accept_all)[0]
    assert job.command == 'echo "single" quoted # not a comment'
    assert read(qpath) == HEADER + "".join(ENTRIES[1:])  # the blank line after the entry goes with it

    [job] = q.take(1, accept_all)[0]
    assert job.command == 'echo "double" {{ \'{{\' }}'
    assert read(qpath) == HEADER + "".join(ENTRIES[2:])

    [job] = q.take(1, accept_all)[0]
    assert job.command == "set -e\n# part of the script, not a comment\nmake all\n"
    # the comment above the sweep belongs to what follows, and stays
    assert read(qpath) == HEADER + "".join(ENTRIES[3:])

    [job] = q.take(1, accept_all)[0]
    assert job.command == "python train.py --lr {{ lr }}"
    assert dict(job.params) == {"lr": 0.1}
    text = read(qpath)
    head, rest = text[len(HEADER + "# about the sweep\n"):].split("\n\n", 1)
    assert text.startswith(HEADER + "# about the sweep\n- ")
    assert rest == ENTRIES[4]
    assert yaml.safe_load(head) == [{"command": ["python train.py --lr {{ lr }}"], "lr": [0.01]}]

    jobs = take_all(q)
    assert [dict(j.params).get("lr") for j in jobs] == [0.01, None]
    assert jobs[1].command == "plain"
    assert read(qpath) == HEADER + "# about the sweep\n# trailing comment block\n\n# kept\n"
    assert q.is_empty()
    assert q.take(1, accept_all) == ([], None)


def test_consumed_yaml_reruns_the_same_jobs(tmp_path, qpath):
    write(qpath, HEADER + "".join(ENTRIES))
    q = QueueFile(str(qpath))
    first = take_all(q, 2) + take_all(q)
    consumed = read(tmp_path / "consumed.yaml")
    assert len(yaml.safe_load(consumed)) == len(first) == 6

    write(qpath, consumed)
    again = take_all(QueueFile(str(qpath), consumed_path=str(tmp_path / "again.yaml")))
    assert [flat(j) for j in again] == [flat(j) for j in first]


def test_sweep_of_four_billion_combinations_pops_in_place(qpath):
    values = list(range(40))
    entry = {"command": ["run {{a}} {{b}} {{c}} {{d}} {{e}} {{f}}"], **{k: list(values) for k in "abcdef"}}  # distinct lists: no YAML aliases
    write(qpath, "# big sweep\n" + yaml.safe_dump([entry], default_flow_style=None, sort_keys=False)
          + "- after\n")
    q = QueueFile(str(qpath))
    started = time.monotonic()
    jobs = [j for _ in range(3) for j in take_all(q, 1)]
    assert time.monotonic() - started < 30  # hang guard only
    assert [dict(j.params) for j in jobs] == [dict(a=0, b=0, c=0, d=0, e=0, f=i) for i in range(3)]
    # The remaining combinations are at most 6 products holding 21 value lists
    # between them (about 3 KB here), however many pops came before.
    assert os.path.getsize(qpath) < 4096
    text = read(qpath)
    assert text.startswith("# big sweep\n- ") and text.endswith("\n- after\n")
    rest = yaml.safe_load(text)
    assert rest[0]["f"] == values[3:] and rest[-1] == "after"
    assert len(rest) <= 7


def test_one_at_a_time_follows_the_product_order_across_rewrites(qpath):
    write(qpath, "- command: ['{{x}}{{y}}{{z}}']\n  x: [a, b, c]\n  y: [d, e]\n  z: [f, g, h]\n- last\n")
    q = QueueFile(str(qpath))
    seen = []
    for _ in range(3 * 2 * 3):
        [job] = take_all(q, 1)
        seen.append("".join(v for _, v in job.params))
    assert seen == [x + y + z for x in "abc" for y in "de" for z in "fgh"]
    assert read(qpath) == "- last\n"


def test_the_pending_file_exists_until_it_replaces_the_queue(tmp_path, qpath):
    write(qpath, "- a\n- b\n")
    write(tmp_path / "consumed.yaml", "- old")  # no newline at its end
    seen = []

    def on_commit(pending):
        seen.append((pending, read(pending.file), os.path.exists(pending.file), read(pending.consumed)))

    jobs, err = QueueFile(str(qpath)).take(1, accept_all, on_commit)
    assert [j.command for j in jobs] == ["a"] and err is None
    [(pending, text, existed, consumed)] = seen
    assert existed and text == "- b\n" == read(qpath)
    assert os.path.dirname(pending.file) == str(qpath.parent) and not os.path.exists(pending.file)
    # the jobs are journalled first: consumed.yaml gets them after on_commit, at
    # the range it named (the newline the pop had to add included)
    assert consumed == "- old" and (pending.start, pending.end) == (5, 10)
    assert read(tmp_path / "consumed.yaml") == "- old\n- a\n"
    assert pending.consumed == str(tmp_path / "consumed.yaml")


def test_a_pop_that_dies_while_journalling_leaves_both_files_as_they_were(tmp_path, qpath):
    """The controller journals a pop's jobs in on_commit: when pegpar dies there
    (an exception stands in for the kill), no file holds a trace of the pop that
    no journal record names."""
    write(qpath, "- a\n- b\n")
    write(tmp_path / "consumed.yaml", "- old\n")

    def on_commit(pending):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        QueueFile(str(qpath)).take(1, accept_all, on_commit)
    assert read(qpath) == "- a\n- b\n" and read(tmp_path / "consumed.yaml") == "- old\n"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]  # no new queue file left


@pytest.mark.parametrize("how", ["in place", "by rename"])
def test_a_save_while_a_pop_journals_wins_and_the_pop_is_abandoned(tmp_path, qpath, how):
    """An editor saves queue.yaml (without the lock) while the pop journals its
    jobs: the pop gives up, the saved text stays, consumed.yaml is cut back and
    on_abandon tells the controller, while the new file still exists."""
    write(qpath, "- a\n- b\n")
    write(tmp_path / "consumed.yaml", "- old\n")
    saved = "- a\n- b\n- added by the user\n"
    seen = []

    def on_commit(pending):
        seen.append(pending)
        if how == "in place":
            write(qpath, saved)
        else:
            write(tmp_path / "new", saved)
            os.chmod(tmp_path / "new", 0o600)
            os.replace(tmp_path / "new", qpath)

    def on_abandon():
        seen.append(("abandoned", os.path.exists(seen[0].file), read(tmp_path / "consumed.yaml")))

    assert QueueFile(str(qpath)).take(1, accept_all, on_commit, on_abandon) is None
    assert seen[1:] == [("abandoned", True, "- old\n")]
    assert read(qpath) == saved and read(tmp_path / "consumed.yaml") == "- old\n"
    assert not os.path.exists(seen[0].file)
    jobs, _ = QueueFile(str(qpath)).take(3, accept_all)  # the next pop takes from the saved text
    assert [j.command for j in jobs] == ["a", "b", "added by the user"]


def test_unconsume_cuts_a_pop_out_of_consumed_yaml_only_if_nothing_followed(tmp_path):
    path = tmp_path / "consumed.yaml"
    write(path, "- old\n- a\n")
    assert unconsume(str(path), 6, 10) and read(path) == "- old\n"
    assert not unconsume(str(path), 6, 10) and read(path) == "- old\n"  # done already: nothing more
    write(path, "- old\n- a\n- b\n")  # something was appended since
    assert not unconsume(str(path), 6, 10) and read(path) == "- old\n- a\n- b\n"
    assert not unconsume(str(tmp_path / "missing.yaml"), 0, 4)


def test_every_replaced_queue_file_gets_closed(qpath):
    """A pop closes the file it replaced on a thread of its own (that last
    close frees the file's blocks): none stays open behind it."""
    write(qpath, "".join(f"- job {i}\n" for i in range(60)))
    q = QueueFile(str(qpath))

    def replaced_open():
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:
                pass  # the listing's own descriptor
        return [link for link in links if link.startswith(str(qpath.parent)) and link.endswith("(deleted)")]

    for _ in range(50):
        assert len(take_all(q, 1)) == 1
    deadline = time.monotonic() + 10
    while replaced_open() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert replaced_open() == []
    assert read(qpath) == "".join(f"- job {i}\n" for i in range(50, 60))


def test_take_several_in_one_transaction(tmp_path, qpath):
    write(qpath, "- command: [a]\n  x: [1, 2, 3]\n# note\n- b\n- c\n")
    q = QueueFile(str(qpath))
    jobs = take_all(q, 4)
    assert [(j.command, dict(j.params).get("x")) for j in jobs] == [("a", 1), ("a", 2), ("a", 3), ("b", None)]
    assert read(qpath) == "# note\n- c\n"
    assert len(yaml.safe_load(read(tmp_path / "consumed.yaml"))) == 4


def test_rejected_job_stops_taking_and_stays(tmp_path, qpath):
    original = "- first\n- command: ['{{ oops }}']\n  x: [1, 2]\n- last\n"
    write(qpath, original)
    q = QueueFile(str(qpath))

    def accept(job):
        if "oops" in job.command:
            raise UserError("unknown variable oops", where=str(job.source))

    jobs, err = q.take(5, accept)
    assert [j.command for j in jobs] == ["first"]
    assert err is not None and "oops" in err.message and err.where == f"{qpath}:2"
    assert read(qpath) == original[len("- first\n"):]

    before = (read(qpath), os.stat(qpath).st_mtime_ns)
    jobs, err = q.take(5, accept)
    assert jobs == [] and "oops" in str(err)
    assert (read(qpath), os.stat(qpath).st_mtime_ns) == before
    assert yaml.safe_load(read(tmp_path / "consumed.yaml")) == ["first"]


def test_rejected_combination_rewrites_only_what_was_taken(qpath):
    write(qpath, "- command: [a]\n  x: [1, 2, 3]\n- b\n")

    def accept(job):
        if dict(job.params)["x"] == 2:
            raise UserError("no")

    jobs, err = QueueFile(str(qpath)).take(5, accept)
    assert [dict(j.params)["x"] for j in jobs] == [1]
    assert err is not None
    assert yaml.safe_load(read(qpath)) == [{"command": ["a"], "x": [2, 3]}, "b"]
    assert read(qpath).endswith("\n- b\n")


def test_file_rewritten_behind_the_lock_is_not_clobbered(tmp_path, qpath):
    write(qpath, "- a\n")

    def accept(job):  # someone appends without the lock while the pop runs
        with open(qpath, "a") as f:
            f.write("- b\n")

    assert QueueFile(str(qpath)).take(1, accept) is None
    assert read(qpath) == "- a\n- b\n"
    assert not (tmp_path / "consumed.yaml").exists()


def test_broken_head_is_reported_with_its_line_and_left_alone(tmp_path, qpath):
    original = "# c\n\n- command: [a]\n  x: [1, 2\n- b\n"
    write(qpath, original)
    jobs, err = QueueFile(str(qpath)).take(1, accept_all)
    assert jobs == [] and err is not None
    assert err.where.startswith(f"{qpath}:")
    assert int(err.where.rsplit(":", 1)[1]) >= 3
    assert read(qpath) == original
    assert not (tmp_path / "consumed.yaml").exists()


def test_entries_below_the_head_are_not_parsed(qpath):
    tail = "- ok\n" * 1000 + "this: is [not yaml\n\t- nor: this: }\n"
    write(qpath, "- head\n" + tail)
    q = QueueFile(str(qpath))
    assert [j.command for j in take_all(q, 1)] == ["head"]
    assert read(qpath) == tail


def test_a_flow_style_queue_is_not_empty_and_one_that_does_not_parse_says_so(qpath):
    original = "[echo a, {command: [b], x: [[1]]}]\n"
    write(qpath, original)
    q = QueueFile(str(qpath))
    assert not q.is_empty()
    jobs, err = q.take(1, accept_all)
    assert jobs == [] and "plain value" in err.message and err.where == f"{qpath}:1"
    assert read(qpath) == original
    with pytest.raises(UserError, match="block-style"):
        q.add(["x"])
    assert read(qpath) == original
    write(qpath, "[]\n- a\n")
    assert "block-style" in q.take(1, accept_all)[1].message


def test_missing_and_empty_queues(tmp_path, qpath):
    q = QueueFile(str(qpath))
    assert q.is_empty() and q.mtime() == 0.0
    assert q.take(3, accept_all) == ([], None)
    for text in ("", "# only a comment\n", "---\n", "[]\n", "--- []  # drained\n"):
        write(qpath, text)
        assert q.is_empty(), text
        assert q.take(1, accept_all) == ([], None)
        assert read(qpath) == text
    assert q.mtime() > 0
    assert not (tmp_path / "consumed.yaml").exists()


def test_take_returns_none_while_another_process_holds_the_lock(qpath):
    write(qpath, "- a\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import filelock, sys, time\n"
         "l = filelock.FileLock(sys.argv[1]); l.acquire(); print('locked', flush=True); time.sleep(60)",
         queue.lock_path(str(qpath))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        q = QueueFile(str(qpath))
        assert q.take(1, accept_all) is None
        assert read(qpath) == "- a\n"
        with pytest.raises(UserError, match="locked"):
            q.add(["b"], timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
    assert [j.command for j in take_all(QueueFile(str(qpath)))] == ["a"]


def _add_many(path: str, worker: int, count: int) -> None:
    q = QueueFile(path)
    batch = 5  # a few entries per call keeps the test fast; calls still interleave
    for i in range(0, count, batch):
        q.add([f"echo {worker}-{k}" for k in range(i, min(count, i + batch))], front=i % 2 == 1)


def _take_until(path: str, total: int, deadline: float) -> None:
    q = QueueFile(path)
    seen = 0
    while seen < total and time.monotonic() < deadline:
        result = q.take(8, accept_all)
        if result and result[0]:
            seen += len(result[0])
        else:
            time.sleep(0.005)  # as the controller would, rather than spin on the lock


def test_concurrent_adds_and_takes_consume_each_entry_exactly_once(tmp_path, qpath):
    write(qpath, "# shared queue\n")
    workers, per_worker = 4, 250
    deadline = time.monotonic() + 120  # hang guard
    ctx = multiprocessing.get_context("fork")
    taker = ctx.Process(target=_take_until, args=(str(qpath), workers * per_worker, deadline))
    adders = [ctx.Process(target=_add_many, args=(str(qpath), w, per_worker)) for w in range(workers)]
    taker.start()
    for p in adders:
        p.start()
    for p in adders + [taker]:
        p.join(max(1.0, deadline - time.monotonic()))
        assert p.exitcode == 0
    consumed = yaml.safe_load(read(tmp_path / "consumed.yaml"))
    assert sorted(consumed) == sorted(f"echo {w}-{i}" for w in range(workers) for i in range(per_worker))
    assert QueueFile(str(qpath)).is_empty()
    assert read(qpath) == "# shared queue\n"


def test_add_keeps_existing_text(qpath):
    original = "%YAML 1.1\n---\n# header\n\n- a   # first\n- |\n  b\n"
    write(qpath, original)
    q = QueueFile(str(qpath))
    q.add(["c", {"command": "d {{ x }}", "x": 1}])
    text = read(qpath)
    assert text.startswith(original)
    assert yaml.safe_load(text[len(original):]) == ["c", {"command": ["d {{ x }}"], "x": [1]}]
    q.add(["z"], front=True)
    assert read(qpath) == "%YAML 1.1\n---\n# header\n\n- z\n" + text[len("%YAML 1.1\n---\n# header\n\n"):]
    assert [j.command for j in take_all(q)] == ["z", "a", "b\n", "c", "d {{ x }}"]


def test_add_to_missing_unterminated_and_empty_marker_files(qpath):
    q = QueueFile(str(qpath))
    q.add(["a"])
    assert yaml.safe_load(read(qpath)) == ["a"]
    assert not os.stat(qpath).st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    write(qpath, "- a  # no newline")
    q.add(["b"])
    assert yaml.safe_load(read(qpath)) == ["a", "b"] and read(qpath).startswith("- a  # no newline\n")
    write(qpath, "# drained\n[]\n# end\n")
    q.add(["c"], front=True)
    assert read(qpath) == "# drained\n- c\n# end\n"


def test_add_keeps_the_document_end_the_empty_markers_comment_and_crlf(qpath):
    """Appended entries go before a `...` that ends the document (after it they
    would be a second document, which no whole-file check accepts); `[]`
    gives way to them but its comment stays; a CRLF file gets CRLF lines."""
    q = QueueFile(str(qpath))
    write(qpath, "- a\n...\n# after the end\n\n")
    q.add(["b"])
    assert read(qpath) == "- a\n- b\n...\n# after the end\n\n"
    check_text(read(qpath).encode(), str(qpath))
    write(qpath, "- a\n- x ...\n")  # not a document end
    q.add(["b"])
    assert read(qpath) == "- a\n- x ...\n- b\n"
    write(qpath, "[]  # nothing yet, add below\n")
    q.add(["c"])
    assert read(qpath) == "# nothing yet, add below\n- c\n"
    write(qpath, "--- []\n")
    q.add(["c"])
    assert read(qpath) == "---\n- c\n"
    write(qpath, "- a\r\n")
    q.add(["b"])
    q.add(["c"], front=True)
    assert qpath.read_bytes() == b"- c\r\n- a\r\n- b\r\n"


def test_add_validates_everything_first(qpath):
    write(qpath, "- a\n")
    with pytest.raises(UserError):
        QueueFile(str(qpath)).add(["b", {"no_command": [1]}])
    # a template that cannot parse would stop the queue at its turn
    for bad in ("echo {{#if x}}", "echo {{/if}}", "echo {{bad", {"command": ["{{#each x}}"], "x": [1]}):
        with pytest.raises(UserError, match="template"):
            QueueFile(str(qpath)).add(["b", bad])
    with pytest.raises(UserError, match="`hostname` collides"):  # it could never run, whatever the hosts
        QueueFile(str(qpath)).add(["b", {"command": ["echo {{hostname}}"], "hostname": ["x"]}])
    assert read(qpath) == "- a\n"
    QueueFile(str(qpath)).add(["echo {{x}}", "{{#each a}}{{this}}{{/each}}"])  # variables are not checked here
    assert read(qpath) == "- a\n- echo {{x}}\n- '{{#each a}}{{this}}{{/each}}'\n"


def test_pop_keeps_permission_bits_and_crlf(qpath):
    write(qpath, "")
    with open(qpath, "wb") as f:
        f.write(b"# c\r\n- command: [a]\r\n  x: [1, 2]\r\n- b\r\n")
    os.chmod(qpath, 0o600)
    take_all(QueueFile(str(qpath)), 1)
    data = open(qpath, "rb").read()
    assert stat.S_IMODE(os.stat(qpath).st_mode) == 0o600
    assert data.startswith(b"# c\r\n- ") and data.endswith(b"\r\n- b\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert yaml.safe_load(data) == [{"command": ["a"], "x": [2]}, "b"]


def test_keep_chomped_block_scalar_keeps_its_blank_lines(qpath):
    write(qpath, "- |+\n  tail\n\n\n- b\n")
    [job] = take_all(QueueFile(str(qpath)), 1)
    assert job.command == "tail\n\n\n"
    assert read(qpath) == "- b\n"


def test_rewritten_keep_chomped_command_stays_one_document(tmp_path, qpath):
    write(qpath, "- x: [1, 2]\n  command:\n    - |+\n      tail\n\n\n- b\n")
    q = QueueFile(str(qpath))
    [job] = take_all(q, 1)
    assert job.command == "tail\n\n\n"
    assert yaml.safe_load(read(qpath)) == [{"x": [2], "command": ["tail\n\n\n"]}, "b"]
    assert [j.command for j in take_all(q)] == ["tail\n\n\n", "b"]
    assert [j.command for j in take_all(QueueFile(str(tmp_path / "consumed.yaml"), str(tmp_path / "c2.yaml")))] \
        == ["tail\n\n\n", "tail\n\n\n", "b"]


def test_oversized_head_entry_is_refused(monkeypatch, qpath):
    monkeypatch.setattr(queuetext, "MAX_ENTRY_BYTES", 100)
    original = "- command: [a]\n  x: [" + ", ".join(map(str, range(100))) + "]\n- b\n"
    write(qpath, original)
    jobs, err = QueueFile(str(qpath)).take(1, accept_all)
    assert jobs == [] and "larger than" in err.message and err.where == f"{qpath}:1"
    assert read(qpath) == original


def test_large_file_pops_without_reading_it_all(qpath):
    with open(qpath, "w") as f:
        f.write("- head\n")
        f.write("- command: [x]\n  y: [1, 2]\n" * 200_000)
    size = os.path.getsize(qpath)
    q = QueueFile(str(qpath))
    assert [j.command for j in take_all(q, 1)] == ["head"]
    assert os.path.getsize(qpath) == size - len("- head\n")


def test_check_text_refuses_what_pops_could_not_cut():
    assert len(queuetext.check_text(b"- a\n- b\n", "q.yaml")) == 2
    with pytest.raises(UserError) as err:
        queuetext.check_text(b'- "one\n- two"\n', "q.yaml")  # PyYAML accepts it as a whole
    assert err.value.where.startswith("q.yaml:")
    with pytest.raises(UserError, match="block-style"):
        queuetext.check_text(b"[a, b]\n", "q.yaml")
    with pytest.raises(UserError) as err:
        queuetext.check_text(b"- a\n- command: [b]\n  x: [1\n", "q.yaml")
    assert err.value.where.startswith("q.yaml:")


def test_check_queue_file(tmp_path, qpath):
    queue.check_queue_file(str(qpath))  # missing: fine, the directory is writable
    with pytest.raises(UserError, match="directory"):
        queue.check_queue_file(str(tmp_path))
    write(qpath, "- a\n")
    os.chmod(qpath, 0o666)
    with pytest.raises(UserError, match="group or others") as err:
        queue.check_queue_file(str(qpath))
    assert "chmod go-w" in str(err.value)
    queue.check_queue_file(str(qpath), allow_shared=True)
    os.chmod(qpath, 0o644)
    queue.check_queue_file(str(qpath))


def test_group_write_is_fine_in_the_owners_private_group_only(qpath):
    """umask 002 (user-private groups): a 664 file whose group has the owner as
    its one member is the owner's alone; any other group-writable one is not."""
    import grp
    import pwd

    write(qpath, "- a\n")
    os.chmod(qpath, 0o664)
    st = os.stat(qpath)
    owner = pwd.getpwuid(st.st_uid).pw_name
    members = {p.pw_name for p in pwd.getpwall() if p.pw_gid == st.st_gid} | set(grp.getgrgid(st.st_gid).gr_mem)
    assert members == {owner}, "the test needs a file in its owner's private group"
    queue.check_queue_file(str(qpath))
    other = shared_group(qpath)
    with pytest.raises(UserError, match="group or others"):
        queue.check_queue_file(str(qpath))
    os.chmod(qpath, 0o644)  # the same group without its write bit
    queue.check_queue_file(str(qpath))
    assert os.stat(qpath).st_gid == other


def shared_group(path) -> int:
    """Give `path` a group that is not its owner's private one (root may)."""
    import grp
    import pwd

    owner = pwd.getpwuid(os.stat(path).st_uid).pw_name
    for g in grp.getgrall():
        members = {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid} | set(g.gr_mem)
        if members != {owner}:
            try:
                os.chown(path, -1, g.gr_gid)
            except PermissionError:
                continue
            return g.gr_gid
    pytest.skip("no group this user may give a file that is not its own private one")
    if os.geteuid() != 0:  # root may write anything
        os.chmod(qpath, 0o444)
        with pytest.raises(UserError, match="writable"):
            queue.check_queue_file(str(qpath))


def test_a_pop_keeps_the_byte_order_mark_of_the_file(qpath):
    with open(qpath, "wb") as f:
        f.write(b"\xef\xbb\xbf- command: [a]\n  x: [1, 2]\n- b\n")
    q = QueueFile(str(qpath))
    take_all(q, 1)
    assert qpath.read_bytes() == b"\xef\xbb\xbf- command: [a]\n  x: [2]\n- b\n"
    take_all(q, 1)
    assert qpath.read_bytes() == b"\xef\xbb\xbf- b\n"
    assert [j.command for j in take_all(q)] == ["b"] and qpath.read_bytes() == b"\xef\xbb\xbf"


def test_a_flow_style_queue_is_written_in_block_style_by_its_first_pop(qpath):
    """`[cmd1, cmd2]`, as Pegasus reads it: the first pop writes the entries
    out one `- ` line each (the file's mode kept), then takes the head."""
    write(qpath, "# from Pegasus\n[echo a, 'echo {{x}}', {command: [b], x: [1, 2]}]\n")
    os.chmod(qpath, 0o640)
    q = QueueFile(str(qpath))
    taken, error = q.take(1, lambda job: None)
    assert error is None and [j.command for j in taken] == ["echo a"]
    assert read(qpath) == "- echo {{x}}\n- command: [b]\n  x: [1, 2]\n"
    assert stat.S_IMODE(os.stat(qpath).st_mode) == 0o640
    taken, _ = q.take(3, lambda job: None)
    assert [j.command for j in taken] == ["echo {{x}}", "b", "b"]
    assert read(qpath).strip() in ("", "[]")


ANCHORED = """\
# values shared with YAML anchors
- command: ['train {{lr}} {{wd}}']
  lr: &lrs [0.1, 0.01]   # the learning rates
  wd: &wd 5
- command: ['note "*lrs" is text here']
  x: ['*lrs']
- &e {command: ['eval {{lr}}'], lr: *lrs}
- command: ['again {{lr}} {{wd}}']
  lr: *lrs
  wd: [*wd, 6]
- *e
- command: [other]
  lr: &lrs [3]
- command: ['last {{lr}}']
  lr: *lrs
"""


def remaining_jobs(path):
    return [flat(job) for entry in queuetext.spec.load_queue(str(path)) for job in queuetext.expand.jobs(entry)]


def test_anchors_move_to_their_next_alias_when_a_pop_takes_their_entry(qpath):
    """Every pop leaves a file that reads as the jobs not yet taken: an anchor
    leaving with its entry lands on the first later alias, flow style."""
    write(qpath, ANCHORED)
    expected = remaining_jobs(qpath)
    q = QueueFile(str(qpath))
    take_all(q, 1)
    assert read(qpath).splitlines()[1:6] == [
        "- command: ['train {{lr}} {{wd}}']", "  lr: [0.01]", "  wd: [5]",
        """- command: ['note "*lrs" is text here']""", "  x: ['*lrs']"]
    assert "- &e {command: ['eval {{lr}}'], lr: &lrs [0.1, 0.01]}" in read(qpath)
    assert "  wd: [&wd 5, 6]" in read(qpath)
    taken = [expected.pop(0)]
    while expected:
        assert remaining_jobs(qpath) == expected
        taken += [flat(job) for job in take_all(q, 1)]
        expected.pop(0)
    assert taken[-3:] == [("eval {{lr}}", (("lr", 0.01),)), ("other", (("lr", 3),)), ("last {{lr}}", (("lr", 3),))]
    assert read(qpath) == "# values shared with YAML anchors\n"


def test_a_pop_of_several_entries_moves_an_anchor_past_all_of_them(qpath):
    write(qpath, "- command: [a]\n  v: &v [1]\n- command: [b]\n  v: *v\n- command: [c]\n  v: *v\n- c2\n"
                 "- command: [d]\n  v: *v\n")
    jobs = take_all(QueueFile(str(qpath)), 3)
    assert [j.command for j in jobs] == ["a", "b", "c"]
    assert read(qpath) == "- c2\n- command: [d]\n  v: &v [1]\n"
