"""GPU slots end to end: hosts with `slots: N`, jobs that take k of them, on real sshd nodes.

Each job prints `$NODE {{slots}}` and its start and end times, read on the node
(the joblog's times include GNU parallel's own delays); the joblog says which
sub-node ran it, and its rendered command which slot indices it held.
"""

from __future__ import annotations

import json
import re

from runner import cluster_hosts, load_yaml, pegpar, records, start, wait_for, write_queue


def q(tmp_path, cluster, env, *extra, input=None):
    return pegpar(["q", "--ssh-config", cluster.ssh_config, "--no-progress", *extra], tmp_path, env, input=input)


def job(label: str, slots: int, sleep: float, policy: str = "") -> str:
    """A queue entry whose rendered command names its label and its slot indices."""
    command = f"echo $NODE {{{{slots}}}} {label} $(date +%s.%N); sleep {sleep}; echo end {label} $(date +%s.%N)"
    return (f"- command: ['{command}']\n  slots: {slots}\n"
            + (f"  allocation_policy: {policy}\n" if policy else ""))


class Ran:
    def __init__(self, rec, slots, begin, end):
        self.rec, self.slots, self.begin, self.end = rec, slots, begin, end

    @property
    def host(self):
        return self.rec.host

    def overlaps(self, other) -> bool:
        return self.begin < other.end and other.begin < self.end


def ran(tmp_path, stdout):
    """label -> Ran: its joblog record, the slot indices it held, and when it
    ran, as the node's clock says (from what the job printed)."""
    times = {}
    for line in stdout.splitlines():
        words = line.split("] ", 1)[1].split()
        if words[0] == "end":
            times.setdefault(words[1], {})["end"] = float(words[2])
        else:
            times.setdefault(words[2], {}).update(begin=float(words[3]), node=words[0], slots=words[1])
    out = {}
    for rec in records(tmp_path):
        m = re.match(r"echo \$NODE (\S+) (\S+) ", rec.command)
        assert m, rec.command
        label = m.group(2)
        assert label not in out, f"{label} recorded twice"
        t = times[label]
        assert (t["node"], t["slots"]) == (rec.host, m.group(1))  # what it printed is where it ran
        out[label] = Ran(rec, tuple(int(i) for i in m.group(1).split(",")), t["begin"], t["end"])
    assert sorted(out) == sorted(times)
    return out


def test_jobs_share_a_hosts_slots_and_no_slot_is_held_twice(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n- hostname: [node-2]\n  slots: 2\n")
    # A holds node-1 whole; B takes node-2; C (2 slots) waits for node-1, then D and E
    # (1 slot each) join it there; F (4 slots) waits until node-1 is empty again.
    write_queue(tmp_path, job("A", 4, 1) + job("B", 2, 4) + job("C", 2, 3) + job("D", 1, 3) + job("E", 1, 3)
                + job("F", 4, 1) + job("G", 1, 1) + job("H", 2, 1))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    jobs = ran(tmp_path, r.stdout)
    assert sorted(jobs) == list("ABCDEFGH")  # every job exactly once
    for label, j in jobs.items():
        assert len(j.slots) == {"A": 4, "B": 2, "C": 2, "F": 4, "H": 2}.get(label, 1)
    assert jobs["A"].host == jobs["F"].host == "node-1"  # 4 slots only on node-1
    for a, ja in jobs.items():
        for b, jb in jobs.items():
            if a < b and ja.host == jb.host and ja.overlaps(jb):
                assert not set(ja.slots) & set(jb.slots), (a, ja.slots, b, jb.slots)
    # at some moment node-1 ran a 2-slot job and two 1-slot jobs together
    on1 = [j for j in jobs.values() if j.host == "node-1"]
    assert any(len(two.slots) == 2 and len([one for one in on1 if len(one.slots) == 1 and one.overlaps(two)
                                            and max(one.begin, two.begin) < min(one.end, two.end)]) >= 2
               and max(j.begin for j in [two] + [o for o in on1 if len(o.slots) == 1 and o.overlaps(two)])
               < min(j.end for j in [two] + [o for o in on1 if len(o.slots) == 1 and o.overlaps(two)])
               for two in on1), [(j.rec.command, j.begin, j.end) for j in on1]
    assert (jobs["C"].host, jobs["C"].slots) == ("node-1", (0, 1))
    assert sorted(jobs[x].slots for x in "DE") == [(2,), (3,)]
    # queue order: each waiting head (C, then F) held back what followed it
    seqs = [jobs[x].rec.seq for x in "ABCDEFGH"]
    assert seqs == sorted(seqs)
    # consumed.yaml keeps the slot counts: pasted back, the same jobs
    assert [e["slots"] for e in load_yaml(tmp_path / "consumed.yaml")] == [[4], [2], [2], [1], [1], [4], [1], [2]]
    # the GPUs' use: slot-hours per sub-node, from the joblog's runtimes
    summary = {s["node"]: s for s in json.loads(pegpar(["log", "--summary", "--json"], tmp_path, pegpar_env).stdout)}
    for name, total in (("node-1", 4), ("node-2", 2)):
        used = sum(j.rec.runtime * len(j.slots) for j in jobs.values() if j.host == name) / 3600
        assert summary[name]["slots"] == total and abs(summary[name]["slot_hours"] - used) < 1e-6


def test_buddy_waits_for_an_aligned_block_where_first_fit_takes_any_slots(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n")
    # two 1-slot jobs hold slots 0 and 2: first_fit gives a 2-slot job 1 and 3
    write_queue(tmp_path, job("X", 1, 3) + job("Y", 1, 3) + job("FF", 2, 0))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    jobs = ran(tmp_path, r.stdout)
    assert (jobs["X"].slots, jobs["Y"].slots, jobs["FF"].slots) == ((0,), (2,), (1, 3))
    assert jobs["FF"].begin < min(jobs["X"].end, jobs["Y"].end)  # while they held 0 and 2
    # buddy does not: it waits for 0-1 or 2-3 to be free whole
    (tmp_path / ".pegpar" / "joblog").unlink()
    write_queue(tmp_path, job("X2", 1, 4) + job("Y2", 1, 1) + job("B", 2, 0, "buddy"))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    jobs = ran(tmp_path, r.stdout)
    assert (jobs["X2"].slots, jobs["Y2"].slots, jobs["B"].slots) == ((0,), (2,), (2, 3))
    assert jobs["B"].begin >= jobs["Y2"].end and jobs["B"].overlaps(jobs["X2"])


def test_a_job_needing_more_slots_than_any_sub_node_has_runs_nothing(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n- node-2\n")
    text = job("A", 1, 0) + job("B", 2, 0) + "# too big\n" + job("C", 8, 0) + job("D", 1, 0)
    write_queue(tmp_path, text)
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "pegpar: queue.yaml:6: needs 8 slots, more than any sub-node has (the most is 4) " \
                       "(ask for fewer slots, or give a host entry more)\n"
    assert (tmp_path / "queue.yaml").read_text() == text
    assert records(tmp_path) == [] and not (tmp_path / "consumed.yaml").exists()


def test_backfill_fills_other_slots_but_never_starves_the_waiting_head(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n- hostname: [node-2]\n  slots: 2\n")
    # A holds a slot of node-1; HEAD needs all of node-1; a stream of 1-slot jobs follows
    write_queue(tmp_path, job("A", 1, 3) + job("HEAD", 4, 1) + "".join(job(f"s{i:02d}", 1, 1) for i in range(12)))
    r = q(tmp_path, cluster, pegpar_env, "--backfill")
    assert r.returncode == 0, r.stderr
    jobs = ran(tmp_path, r.stdout)
    assert len(jobs) == 14
    head = jobs["HEAD"]
    stream = [jobs[f"s{i:02d}"] for i in range(12)]
    # backfilled: stream jobs ran on node-2 while the head waited ...
    before = [s for s in stream if s.begin < head.begin]
    assert before and all(s.host == "node-2" for s in before)
    # ... and none took node-1's slots from it: the head ran once A ended, before the stream did
    assert head.begin >= jobs["A"].end
    assert any(s.begin > head.begin for s in stream)
    assert not any(s.host == "node-1" and s.overlaps(jobs["A"]) for s in stream)


def test_without_backfill_nothing_passes_the_waiting_head(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n- hostname: [node-2]\n  slots: 2\n")
    write_queue(tmp_path, job("A", 1, 2) + job("HEAD", 4, 0) + job("s", 1, 0))
    r = q(tmp_path, cluster, pegpar_env)
    assert r.returncode == 0, r.stderr
    jobs = ran(tmp_path, r.stdout)
    assert jobs["s"].rec.seq > jobs["HEAD"].rec.seq and jobs["s"].begin >= jobs["A"].end


def test_status_shows_which_job_holds_which_slots(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n")
    write_queue(tmp_path, job("A", 2, 30) + job("B", 1, 30))
    p = start(["q", "--ssh-config", cluster.ssh_config, "--no-progress"], tmp_path, pegpar_env)
    try:
        def two_running():
            s = pegpar(["status", "--json"], tmp_path, pegpar_env, timeout=30)
            return json.loads(s.stdout)["running"] == 2
        wait_for(two_running, timeout=30, what="both jobs running")
        data = json.loads(pegpar(["status", "--json"], tmp_path, pegpar_env, timeout=30).stdout)
        (node,) = data["nodes"]
        assert (node["slots"], node["free"]) == (4, [3])
        assert [j["slots"] for j in node["jobs"]] == [[0, 1], [2]]
        assert sorted(j["slots"] for j in data["jobs_running"]) == [[0, 1], [2]]
        text = pegpar(["status"], tmp_path, pegpar_env, timeout=30).stdout
        assert re.search(r"node-1\s+running\s+0-1\s+#\d+", text), text
        assert re.search(r"\n\s+2\s+#\d+", text) and re.search(r"\n\s+3\s+free", text), text
    finally:
        pegpar(["stop", "--kill"], tmp_path, pegpar_env, timeout=30)
        p.communicate(timeout=60)


def test_a_broadcast_step_runs_once_per_sub_node_with_all_its_slots(tmp_path, cluster, pegpar_env):
    cluster_hosts(tmp_path, "- hostname: [node-1]\n  slots: 4\n- node-2\n")
    write_queue(tmp_path, "- echo $NODE {{slots}}\n")
    r = pegpar(["b", "--ssh-config", cluster.ssh_config, "--no-progress"], tmp_path, pegpar_env)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[node-1] node-1 0,1,2,3", "[node-2] node-2 0"]
    assert len(records(tmp_path)) == 2
