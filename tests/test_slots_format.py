"""The job-slots format (Pegasus's job-slots branch): hosts' `slots: N`, jobs'
`slots` and `allocation_policy`, as read, expanded and rendered."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pegpar import expand, plan, spec  # noqa: E402
from pegpar.errors import UserError  # noqa: E402

# Shaped like the branch's examples: GPU boxes of two sizes with a host
# parameter, and a queue mixing 8-, 4-, 2- and 1-GPU sweeps, a scaling sweep
# over slot counts and a buddy entry.
HOSTS = """\
# two kinds of GPU box
- hostname: [box-a1, box-a2]
  slots: 8
  kind: [big]
- hostname:
    - box-b1
    - box-b2
    - box-b3
  slots: 4   # four GPUs each
  kind: [small]
"""
QUEUE = """\
- command:
    - CUDA_VISIBLE_DEVICES={{slots}} torchrun --nproc_per_node=8 pretrain.py --arch {{arch}} --data {{data}}
  slots: [8]
  arch: [vit-l, vit-h]
  data: [in1k, in21k]
- command:
    - CUDA_VISIBLE_DEVICES={{slots}} torchrun --nproc_per_node=4 tune.py --arch {{arch}} --lr {{lr}} --on {{kind}}
  slots:
    - 4
  arch: [vit-b]
  lr: [3e-4, 1e-4]
- command: ['CUDA_VISIBLE_DEVICES={{slots}} python probe.py --task {{task}}']
  slots: 2
  task: [cls, seg, det]
- CUDA_VISIBLE_DEVICES={{slots}} python eval.py
- command: ['CUDA_VISIBLE_DEVICES={{slots}} python scale.py --gpus {{slots}}']
  slots: [1, 2, 4, 8]
- command: ['CUDA_VISIBLE_DEVICES={{slots}} python nccl.py --policy {{allocation_policy}}']
  slots: [2, 4]
  allocation_policy: buddy
"""


def files(tmp_path, hosts=HOSTS, queue=QUEUE):
    (tmp_path / "hosts.yaml").write_text(hosts)
    (tmp_path / "queue.yaml").write_text(queue)
    return str(tmp_path / "queue.yaml"), str(tmp_path / "hosts.yaml")


def test_the_branch_shaped_files_expand_to_the_jobs_pegasus_runs(tmp_path):
    doc = json.loads(plan.show(*files(tmp_path), 1, show_all=True, as_json=True))
    assert [(n["name"], n["slots"]) for n in doc["subnodes"]] == [
        ("box-a1 (kind=big)", 8), ("box-a2 (kind=big)", 8),
        ("box-b1 (kind=small)", 4), ("box-b2 (kind=small)", 4), ("box-b3 (kind=small)", 4)]
    assert all("slots" not in n["params"] for n in doc["subnodes"])  # not a parameter of the sub-node
    jobs = [(j["slots"], j["allocation_policy"]) for j in doc["jobs"]]
    # 2x2 8-GPU, 2 4-GPU, 3 2-GPU, 1 1-GPU, the 1/2/4/8 sweep, buddy 2 and 4
    assert jobs == [(8, "first_fit")] * 4 + [(4, "first_fit")] * 2 + [(2, "first_fit")] * 3 + \
        [(1, "first_fit")] + [(n, "first_fit") for n in (1, 2, 4, 8)] + [(2, "buddy"), (4, "buddy")]
    assert doc["count"] == 16
    assert doc["jobs"][0]["params"] == {"slots": 8, "arch": "vit-l", "data": "in1k"}
    assert doc["jobs"][-1]["params"] == {"slots": 4, "allocation_policy": "buddy"}
    text = plan.show(*files(tmp_path), 1, show_all=True, as_json=False)
    assert "box-a1 (kind=big)" in text and "8 slots" in text


def test_slots_renders_the_given_indices_and_the_policy_its_name():
    (entry,) = spec.parse_queue("- command: ['x={{slots}} {{allocation_policy}}']\n"
                                "  slots: [2]\n  allocation_policy: buddy\n", "q.yaml")
    job = next(expand.jobs(entry))
    node = expand.SubNode("n", "n", (), False, None, 8)
    assert (job.slots, job.policy) == (2, "buddy")
    assert expand.render(job, node, (4, 5)) == "x=4,5 buddy"
    assert expand.render(job, node) == "x=0,1 buddy"  # before any allocation: the first ones
    plain = expand.Job("echo {{slots}} {{allocation_policy}}", (), spec.Source("q.yaml", 1), plain=True)
    assert (plain.slots, plain.policy) == (1, "first_fit")
    assert expand.render(plain, node, (3,)) == "echo 3 first_fit"
    # the canonical form keeps the policy: pasted back, it reads as the same entry
    assert job.canonical() == {"command": ["x={{slots}} {{allocation_policy}}"], "slots": [2],
                               "allocation_policy": ["buddy"]}
    again = spec.queue_entry_from_object(job.canonical(), spec.Source("consumed.yaml", 1))
    assert next(expand.jobs(again)) == expand.Job(job.command, job.params, again.source)


def test_hosts_without_slots_are_one_slot_sub_nodes_as_before(tmp_path):
    entries = spec.parse_hosts("- node-1\n- hostname: [node-2]\n  gpu: [0, 1]\n", "hosts.yaml")
    assert [n.slots for n in expand.subnodes(entries, 1)] == [1, 1, 1]
    assert [n.slots for n in expand.subnodes(None, 3)] == [1, 1, 1]


@pytest.mark.parametrize("text, where, message", [
    ("- hostname: [a]\n  slots: [4, 8]\n", "hosts.yaml:2", "`slots` of a host entry is one number"),
    ("- hostname: [a]\n  slots: 0\n", "hosts.yaml:2", "`slots` must be a whole number of at least 1, not '0'"),
    ("- hostname: [a]\n\n  slots: two\n", "hosts.yaml:3", "not 'two'"),
    ("- hostname: [a]\n  slots: 2.5\n", "hosts.yaml:2", "not '2.5'"),
])
def test_bad_host_slots_name_their_line(text, where, message):
    with pytest.raises(UserError) as err:
        spec.parse_hosts(text, "hosts.yaml")
    assert err.value.where == where and message in err.value.message


@pytest.mark.parametrize("text, where, message", [
    ("- command: [x]\n  slots: [1, 0]\n", "q.yaml:2", "`slots` must be a whole number of at least 1, not '0'"),
    ("- command: [x]\n  slots: true\n", "q.yaml:2", "not 'true'"),
    ("- command: [x]\n  allocation_policy: [buddy, first_fit]\n", "q.yaml:2",
     "`allocation_policy` is one value for the whole entry"),
    ("- command: [x]\n  allocation_policy: best_fit\n", "q.yaml:2", "unknown allocation_policy 'best_fit'"),
])
def test_bad_job_slots_and_policies_name_their_line(text, where, message):
    with pytest.raises(UserError) as err:
        spec.parse_queue(text, "q.yaml")
    assert err.value.where == where and message in err.value.message


def test_a_job_slots_parameter_no_longer_collides_with_the_hosts(tmp_path):
    doc = json.loads(plan.show(*files(tmp_path, queue="- command: ['x {{slots}}']\n  slots: [2]\n"), 1,
                               show_all=True, as_json=True))
    assert doc["count"] == 1


def test_expand_refuses_a_job_no_sub_node_can_take(tmp_path):
    with pytest.raises(UserError) as err:
        plan.show(*files(tmp_path, queue="- echo ok\n- command: [x]\n  slots: [16]\n"), 1, show_all=True,
                  as_json=True)
    assert err.value.where.endswith("queue.yaml:2") and "needs 16 slots" in err.value.message
