"""provider = vertex as it behaves in production: the per-project job limit and the local queue,
cancel without results, a region's first job failing with INTERNAL, the uploaded input and
output lines without custom_id (tests/lib/fake_vertex.py; Google's Claude batch page,
https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch)."""
import json
import os
import re

from bfs import read_status, wait_results, wait_state
from mount import wait_for
# The fixtures and helpers of the Vertex tests (pytest finds fixtures imported here).
from test_90_vertex import read, sa_key, submit, vertex, vline, vrequests  # noqa: F401


def queued_position(s):
    m = re.search(r"queued: position (\d+)", (s.get("error") or {}).get("message") or "")
    return int(m.group(1)) if m else None


def test_jobs_past_the_project_limit_are_queued_and_sent_as_others_end(vertex):
    # The fake refuses a fifth unfinished job, as Vertex does; batchfs never asks for it:
    # the fifth and sixth batches are accepted (close succeeds), shown queued with their
    # position, and submitted as running jobs end.
    srv, m = vertex({"running_s": 3})
    dirs = [submit(m, vrequests([f"a{i}", f"b{i}"])) for i in range(6)]
    states = [read_status(d) for d in dirs]
    assert [s["state"] for s in states[:4]] != ["queued"] * 4
    assert all(s["id"] for s in states[:4])
    assert [s["state"] for s in states[4:]] == ["queued", "queued"]
    assert [queued_position(s) for s in states[4:]] == [1, 2]
    assert states[4]["id"] is None and states[4]["parts"][0]["state"] == "queued"
    assert "max_concurrent_jobs" in states[4]["error"]["message"]
    assert srv.jobs_created == 4
    for d in dirs:
        wait_state(d, "completed", timeout=40)
        s = wait_results(d)
        i = dirs.index(d)
        assert sorted(os.listdir(os.path.join(d, "results"))) == [f"a{i}.json", f"b{i}.json"]
        assert s["error"] is None
    assert srv.jobs_created == 6
    assert srv.stats["quota_refusals"] == 0 and srv.stats["most_running"] <= 4


def test_max_concurrent_jobs_and_a_queued_batch_survives_a_restart(vertex):
    # max_concurrent_jobs = 1: the second batch waits; the daemon dies while it is queued;
    # after the restart it is submitted exactly once.
    srv, m = vertex({"running_s": 2}, max_concurrent_jobs=1)
    first = submit(m, vrequests(["f1"]))
    second = submit(m, vrequests(["s1", "s2"]))
    assert read_status(second)["state"] == "queued" and srv.jobs_created == 1
    m.kill()
    m.start()
    assert read_status(second)["state"] in ("queued", "validating", "in_progress")
    wait_state(first, "completed", timeout=30)
    wait_state(second, "completed", timeout=30)
    wait_results(second)
    assert sorted(os.listdir(os.path.join(second, "results"))) == ["s1.json", "s2.json"]
    assert srv.jobs_created == 2 and srv.stats["most_running"] == 1


def test_a_refusal_for_the_projects_quota_queues_the_batch(vertex):
    # A job batchfs does not know of (discover = none) takes the only slot: the create is
    # refused with 429 RESOURCE_EXHAUSTED; the batch is queued, not failed, and sent later.
    # It runs longer than batchfs's retries of the refused create last (~7 s); ours is quick.
    srv, m = vertex({"running_s": 10, "max_running": 1}, discover="none")
    srv.create_job([vline("x1")])
    srv.set_config(running_s=1)
    d = submit(m, vrequests(["q1"]))
    s = read_status(d)
    assert s["state"] == "queued" and queued_position(s) == 1
    assert "Quota exceeded" in s["error"]["message"]
    assert srv.stats["quota_refusals"] >= 1
    wait_state(d, "completed", timeout=40)
    wait_results(d)
    assert srv.jobs_created == 2 and srv.stats["most_running"] == 1


def test_a_queued_batch_can_be_canceled_without_asking_the_provider(vertex):
    srv, m = vertex({"running_s": 30}, max_concurrent_jobs=1)
    submit(m, vrequests(["r1"]))
    d = submit(m, vrequests(["w1"]))
    assert read_status(d)["state"] == "queued"
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    s = wait_state(d, "canceled")
    assert s["results"] == "unavailable" and srv.jobs_created == 1
    assert srv.count("POST", r":cancel$") == 0
    # It never leaves the queue afterwards: a poll later, still one job.
    wait_for(lambda: srv.count("GET", r"/batchPredictionJobs/") >= 3, 10, what="polls")
    assert read_status(d)["state"] == "canceled" and srv.jobs_created == 1
