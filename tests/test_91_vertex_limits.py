"""provider = vertex as it behaves in production: the per-project job limit and the local queue,
cancel without results, a region's first job failing with INTERNAL, the uploaded input and
output lines without custom_id (tests/lib/fake_vertex.py; Google's Claude batch page,
https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch)."""
import errno
import json
import os
import re

import pytest

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
    # The refused attempt's upload was removed: one input object, the job's.
    ours = [n for (b, n) in srv.objects if n.startswith("batchfs/") and
            n.endswith("/requests.jsonl")]
    assert len(ours) == 1


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
    # Nothing was sent: the file may be written again (submitted once a slot is free) and
    # the directory removed.
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(vrequests(["w2"]))
    assert read_status(d)["state"] == "queued" and srv.jobs_created == 1
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    wait_state(d, "canceled")
    os.rmdir(d)
    assert not os.path.exists(d)


def running_job(srv, m, ids, **keys):
    d = submit(m, vrequests(ids))
    wait_for(lambda: read_status(d)["provider_state"] == "JOB_STATE_RUNNING", 10,
             what="job running")
    wait_for(lambda: srv.job(read_status(d)["id"]).finished(srv.now()) >= 1, 10,
             what="a request done")
    return d


def test_cancel_is_refused_with_the_warning_until_cancel_bang(vertex):
    # Vertex writes no results for a cancelled job (the fake does the same): a plain
    # `cancel` is refused with EBUSY and the warning in status; nothing is sent.
    srv, m = vertex({"running_s": 30})
    d = running_job(srv, m, [f"c{i}" for i in range(10)])
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("cancel\n")
    assert e.value.errno == errno.EBUSY
    s = read_status(d)
    assert s["state"] == "in_progress" and srv.count("POST", r":cancel$") == 0
    assert "no results" in s["error"]["message"] and "cancel!" in s["error"]["message"]
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel!\n")
    assert srv.count("POST", r":cancel$") == 1
    s = wait_state(d, "canceled")
    assert "no results" in s["error"]["message"]
    wait_for(lambda: read_status(d)["results"] == "unavailable", 10, what="no results")
    # The fake wrote nothing, as Vertex does not.
    bucket, base = srv.job(s["id"]).output_dir()[5:].split("/", 1)
    assert not [n for (b, n) in srv.objects if b == bucket and n.startswith(base + "/")]


def test_cancel_confirm_off_cancels_at_once(vertex):
    srv, m = vertex({"running_s": 30}, cancel_confirm="off")
    d = running_job(srv, m, ["k1", "k2", "k3"])
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    assert srv.count("POST", r":cancel$") == 1
    wait_state(d, "canceled")


def test_a_result_line_without_custom_id_is_placed_by_position_in_input_order(vertex):
    # The job kept input order: the line that lost its custom_id takes the custom_id of the
    # request at its position; nothing is left out.
    ids = [f"p{i}" for i in range(8)]
    srv, m = vertex({"output_order": "input", "no_custom_id": ["p5"]})
    d = submit(m, vrequests(ids))
    wait_state(d, "completed")
    s = wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(c + ".json" for c in ids)
    got = json.loads(read(os.path.join(d, "results", "p5.json")))
    assert "custom_id" not in got and got["request"]["messages"][0]["content"] == "text p5"
    assert s["error"] is None


def test_result_lines_without_custom_id_are_reported_and_the_rest_ingested(vertex):
    # Output in processing order: a line without custom_id cannot be placed. It is named in
    # status; every other result is there (today: results fail on every poll).
    ids = [f"q{i}" for i in range(8)]
    srv, m = vertex({"no_custom_id": ["q2"]})
    d = submit(m, vrequests(ids))
    wait_state(d, "completed")
    s = wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(
        c + ".json" for c in ids if c != "q2")
    assert "no custom_id" in s["error"]["message"] and "left out" in s["error"]["message"]
    assert len(read(os.path.join(d, "results.jsonl")).splitlines()) == 7


def test_a_regions_first_job_failing_with_internal_is_retried_once(vertex):
    # The fake fails the region's first job with code 13 INTERNAL; batchfs shows the wait in
    # status, retries once after first_job_retry, and the batch completes under its id.
    srv, m = vertex({"internal_first_job": True, "running_s": 2}, first_job_retry=1.5)
    ids = ["i1", "i2", "i3"]
    d = submit(m, vrequests(ids))
    first = read_status(d)["id"]

    def waiting():
        s = read_status(d)
        msg = (s.get("error") or {}).get("message") or ""
        return s if "INTERNAL" in msg and "retries it once at" in msg else None
    s = wait_for(waiting, 10, what="the retry announced in status")
    assert s["state"] == "validating" and s["provider_state"] == "JOB_STATE_FAILED"
    assert srv.jobs_created == 1
    s = wait_for(lambda: (lambda x: x if "retried once as job" in (
        (x.get("error") or {}).get("message") or "") else None)(read_status(d)), 10,
        what="the retry named in status")
    assert s["state"] in ("validating", "in_progress") and s["id"] == first
    s = wait_state(d, "completed", timeout=30)
    assert s["id"] == first and srv.jobs_created == 2
    retry = srv.create_bodies[1]
    assert retry["labels"]["batchfs_retry_of"] == first
    assert retry["inputConfig"] == srv.create_bodies[0]["inputConfig"]
    assert retry["model"] == srv.create_bodies[0]["model"]
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == [c + ".json" for c in ids]
    # The retry is not a batch made elsewhere.
    wait_for(lambda: srv.count("GET", r"/batchPredictionJobs$") >= 2, 10, what="a listing")
    assert sorted(os.listdir(os.path.join(m.path, "v"))) == [".by-id", os.path.basename(d)]
    assert srv.jobs_created == 2


def test_the_upload_is_normalised_as_googles_sdk_writes_it(vertex):
    # CRLF line ends, blank lines, blanks around objects and request.model on every line:
    # uploaded as LF-terminated lines without blanks and without request.model (the model
    # goes in the job); every other byte as written.
    srv, m = vertex(model=None)
    ids = ["n1", "n2", "n3"]
    raw = [vline(c, f"text {c}", model="claude-3-7-sonnet@20250219") for c in ids]
    body = "  " + raw[0] + "\r\n\r\n" + raw[1] + " \t\r\n\n   \n" + raw[2]
    d = submit(m, body)
    [create] = srv.create_bodies
    assert create["model"] == "publishers/anthropic/models/claude-3-7-sonnet@20250219"
    ident = create["labels"]["batchfs_identity"]
    want = "".join(vline(c, f"text {c}") + "\n" for c in ids)
    assert srv.object("b", f"batchfs/{ident}/requests.jsonl") == want.encode()
    assert read(os.path.join(d, "requests.jsonl"), "rb") == body.encode()
    wait_state(d, "completed")
    s = wait_results(d)
    assert s["counts"]["succeeded"] == 3 and s["counts"]["errored"] == 0


def bq_rows_as_lines(srv, ref):
    """The rows of the predictions table named in outputInfo, keyed by custom_id."""
    proj, ds = ref["bigqueryOutputDataset"][5:].split(".")
    t = srv.tables[(proj, ds, ref["bigqueryOutputTable"])]
    return {r["custom_id"]: r for r in t["rows"]}


def test_output_bigquery_writes_a_table_and_results_come_from_tabledata_list(vertex):
    # output = bigquery: the job's output goes to a table in bigquery_dataset; batchfs reads
    # the rows back (tables.get for the schema, tabledata.list page by page) into results/.
    ids = [f"g{i}" for i in range(5)]
    srv, m = vertex(output="bigquery", bigquery_dataset="bq://p.batch_out")
    d = submit(m, vrequests(ids[:2]) + vline(ids[2], "please fail-me") + "\n" +
               vrequests(ids[3:]))
    [create] = srv.create_bodies
    assert create["outputConfig"] == {"predictionsFormat": "bigquery", "bigqueryDestination": {
        "outputUri": "bq://p.batch_out"}}
    s = wait_state(d, "completed")
    s = wait_results(d)
    assert s["counts"]["succeeded"] == 4 and s["counts"]["errored"] == 1
    rows = bq_rows_as_lines(srv, srv.job_json(s["id"])["outputInfo"])
    assert sorted(rows) == sorted(ids)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(c + ".json" for c in ids)
    for c in ids:
        got = json.loads(read(os.path.join(d, "results", c + ".json")))
        assert got["custom_id"] == c and got["request"] == rows[c]["request"]
        assert got.get("response") == rows[c]["response"] and got["status"] == rows[c]["status"]
    assert json.loads(read(os.path.join(d, "results", "g2.json")))["status"].startswith(
        "Bad Request")
    assert srv.count("GET", r"/tables/[^/]+/data") >= 3  # two rows a page


def test_a_job_made_elsewhere_with_bigquery_input_and_output_shows_its_results(vertex):
    srv, m = vertex()
    jid = srv.create_job([vline("e1", "from bq"), vline("e2"), vline("e3")],
                         bq_input="bq://p.inputs.requests", bq_output="bq://p.outs")
    d = os.path.join(m.path, "v", jid)
    wait_for(lambda: os.path.isdir(d), 10, what="the foreign job's dir")
    wait_state(d, "completed")
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["e1.json", "e2.json", "e3.json"]
    got = json.loads(read(os.path.join(d, "results", "e1.json")))
    assert got["response"]["content"][0]["text"] == "echo: from bq"


def test_a_job_waiting_for_its_internal_retry_can_be_canceled(vertex):
    srv, m = vertex({"internal_first_job": True}, first_job_retry=60)
    d = submit(m, vrequests(["w1", "w2"]))
    wait_for(lambda: "retries it once at" in ((read_status(d).get("error") or {}).get(
        "message") or ""), 10, what="the retry announced")
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel!\n")
    s = wait_state(d, "failed")
    assert "cancelled before its retry" in s["error"]["message"]
    # Ended: never polled again, so never retried.
    assert srv.jobs_created == 1 and s["results"] == "unavailable"
