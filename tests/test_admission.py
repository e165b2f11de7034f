"""--max-load and --memfree: the readings, and a host held back while a CPU burner runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from runner import cluster_hosts, pegpar, records, start, wait_for, write_queue

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar.admission import Limits, parse_size, reading  # noqa: E402
from pegpar.errors import UserError  # noqa: E402


def test_sizes_as_gnu_parallel_takes_them():
    assert parse_size("512") == 512
    assert parse_size("1k") == 1024 and parse_size("2M") == 2 << 20 and parse_size("1.5G") == 3 << 29
    assert parse_size("1P") == 1 << 50 and parse_size("4gb") == 4 << 30
    with pytest.raises(UserError, match="is not a memory size"):
        parse_size("lots")


def test_a_reading_is_the_processes_running_now_less_the_reader_and_memavailable():
    out = "0.52 0.58 0.59 3/412 9981\nMemAvailable:   20480 kB\n"
    assert reading(out) == (2.0, 20480 * 1024)
    assert reading("0.00 0.01 0.05 1/99 5\n") == (0.0, None)
    with pytest.raises(ValueError):
        reading("")


def test_limits_say_why_a_host_is_held():
    limits = Limits(max_load=2, memfree=1 << 30)
    assert limits.why_held(2, 2 << 30) is None
    assert limits.why_held(3, 2 << 30) == "load 3 above --max-load 2"
    assert limits.why_held(0, 512 << 20) == "512M of memory free, below --memfree 1G"
    assert not Limits() and Limits(memfree=1)


def test_a_bad_memfree_is_one_line_exit_2(tmp_path, pegpar_env):
    write_queue(tmp_path, "- echo no\n")
    r = pegpar(["q", "--memfree", "much"], tmp_path, pegpar_env)
    assert (r.returncode, r.stderr) == (2, "pegpar: 'much' is not a memory size (e.g. 512M or 2G)\n")
    assert (tmp_path / "queue.yaml").read_text() == "- echo no\n"


def burners(n: int):
    return [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True) for _ in range(n)]


def test_max_load_holds_a_host_back_while_a_cpu_burner_runs(tmp_path, cluster, pegpar_env):
    """The nodes share this machine's kernel: with 4 burners its load is 4 or
    more, above --max-load 3; once they stop, the job runs."""
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, "- echo ran on $NODE\n")
    hot = burners(4)
    p = None
    try:
        p = start(["q", "--ssh-config", cluster.ssh_config, "--no-progress", "--max-load", "3"], tmp_path,
                  pegpar_env)

        def held():
            s = json.loads(pegpar(["status", "--json"], tmp_path, pegpar_env, timeout=30).stdout)
            return s["nodes"] and "above --max-load 3" in (s["nodes"][0].get("held") or "")
        wait_for(held, timeout=30, what="status saying node-1 is held back")
        started = time.time()
        while time.time() - started < 5:
            assert records(tmp_path) == [] and "echo ran" in (tmp_path / "queue.yaml").read_text()
            time.sleep(0.25)
        text = pegpar(["status"], tmp_path, pegpar_env, timeout=30).stdout
        assert "takes no new job: load" in text, text
    finally:
        for b in hot:
            os.killpg(b.pid, 9)
            b.wait()
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    assert out == "[node-1] ran on node-1\n"
    assert "host node-1 takes no new job: load" in err and "host node-1 takes jobs again" in err, err


def test_memfree_above_what_any_host_has_runs_nothing_until_stopped(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- node-1\n")
    write_queue(tmp_path, "- echo never\n")
    p = start(["q", "--ssh-config", cluster.ssh_config, "--no-progress", "--memfree", "1P"], tmp_path, pegpar_env)
    try:
        wait_for(lambda: "below --memfree 1P" in (json.loads(pegpar(["status", "--json"], tmp_path, pegpar_env,
                                                                    timeout=30).stdout)["nodes"] or [{}])[0]
                 .get("held", ""), timeout=30, what="node-1 held back")
    finally:
        pegpar(["stop"], tmp_path, pegpar_env, timeout=30)
        out, err = p.communicate(timeout=60)
    assert out == "" and records(tmp_path) == []
    assert (tmp_path / "queue.yaml").read_text() == "- echo never\n"
