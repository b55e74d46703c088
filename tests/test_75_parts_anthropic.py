"""Parts against the Anthropic fake: byte-exact results across parts, exactly once per part
across crashes at every step of a multi-part commit, lost answers in parallel commits, a
same-sized batch of another client, and actions racing a commit (docs/semantics.md "Parts")."""
import errno
import json
import os
import threading
import time

import pytest

from conftest import unique
from bfs import anthropic_requests, read_status, wait_results, wait_state
from fake_anthropic import mount_remote
from mount import wait_for

API = "/v1/messages/batches"
CREATE = {"method": "POST", "path": f"^{API}$"}
CANCEL = {"method": "POST", "path": f"^{API}/[^/]+/cancel$"}


def rule(where, **kw):
    return dict(where, **kw)


def new_batch(m):
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    return d


class Writer(threading.Thread):
    """Writes requests.jsonl in the background: its close() is the commit."""

    def __init__(self, d, body):
        super().__init__(daemon=True)
        self.path = os.path.join(d, "requests.jsonl")
        self.body = body
        self.error = None

    def run(self):
        try:
            with open(self.path, "w") as f:
                f.write(self.body)
        except OSError as e:
            self.error = e


def results_jsonl(d):
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        return f.read()


def check_parts_done(d, srv, n, per_part):
    """Every part at the fake exactly once, every result in request order, byte-exact."""
    s = wait_results(d, timeout=40)
    ids = [p["id"] for p in s["parts"]]
    assert len(ids) == -(-n // per_part)
    assert sorted(srv.batch_ids()) == sorted(ids), (srv.batch_ids(), ids)
    assert srv.batches_created == len(ids)
    # The fake answers in its own order; results.jsonl is in request order, byte for byte.
    by_id = {json.loads(line)["custom_id"]: line for bid in ids for line in srv.result_lines(bid)}
    got = results_jsonl(d)
    assert got == b"".join(by_id[f"req-{i}"] + b"\n" for i in range(n))
    return s


def test_parts_at_anthropic_hold_every_result_byte_exact(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=1000)
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2500))
    s = read_status(d)
    assert [p["counts"]["total"] for p in s["parts"]] == [1000, 1000, 500]
    assert [len(srv.requests_of(p["id"])) for p in s["parts"]] == [1000, 1000, 500]
    s = check_parts_done(d, srv, 2500, 1000)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 2500
    line = [x for x in srv.result_lines(s["parts"][1]["id"]) if b'"req-1500"' in x]
    with open(os.path.join(d, "results", "req-1500.json"), "rb") as f:
        assert f.read() == line[0] + b"\n"


@pytest.mark.parametrize("which", [0, 1, 2], ids=["part-1", "part-2", "last-part"])
@pytest.mark.parametrize("how", ["created-then-crash", "crash-then-lands"])
def test_kill_9_during_a_multi_part_commit_then_remount(fake_server, mount_factory, which, how):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=2, reconcile_grace=30)
    m.expect_log(r"interrupted|lost|looking")
    d = new_batch(m)
    if how == "created-then-crash":
        # The fake makes the batch, then holds its answer until the daemon is gone.
        srv.add_fault(rule(CREATE, action="hold", seconds=60, skip=which))
    else:
        # The fake sleeps on the create; the daemon dies; the batch lands after the crash.
        srv.add_fault(rule(CREATE, action="delay", seconds=2, skip=which))
    w = Writer(d, anthropic_requests(6))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == which + 1, 10,
             what=f"create {which + 1} to be sent")
    if how == "created-then-crash":
        wait_for(lambda: srv.batches_created == which + 1, 10, what="the fake to create it")
    m.kill()
    w.join(10)
    assert w.error is not None
    m.start()
    check_parts_done(d, srv, 6, 2)
    assert srv.count("POST", f"^{API}$") == 3  # each part sent exactly once


def test_ten_parallel_commits_with_lost_answers_each_get_their_own_batch(fake_server,
                                                                      mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"lost")
    srv.add_fault(rule(CREATE, action="drop_after", times=10))
    dirs = [new_batch(m) for _ in range(10)]
    bodies = [anthropic_requests(3, prefix=f"d{i}") for i in range(10)]
    writers = [Writer(d, b) for d, b in zip(dirs, bodies)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.error is None
    ids = [read_status(d)["id"] for d in dirs]
    assert len(set(ids)) == 10 and None not in ids
    assert sorted(ids) == sorted(srv.batch_ids()) and srv.batches_created == 10
    for i, d in enumerate(dirs):
        wait_results(d)
        got = [json.loads(x)["custom_id"] for x in results_jsonl(d).splitlines()]
        assert got == [f"d{i}-{k}" for k in range(3)]
        assert sorted(os.listdir(os.path.join(d, "results"))) == \
            [f"d{i}-{k}.json" for k in range(3)]


def test_a_same_sized_batch_made_during_a_crash_is_not_adopted(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"interrupted|cannot tell")
    d = new_batch(m)
    srv.add_fault(rule(CREATE, action="hold", seconds=60))
    w = Writer(d, anthropic_requests(4))
    w.start()
    wait_for(lambda: srv.batches_created == 1, 10, what="our create to land")
    ours = srv.batch_ids()[0]
    m.kill()
    w.join(10)
    # Another client makes a batch of the same size while batchfs is down.
    theirs = srv.create_batch([json.loads(x) for x in
                               anthropic_requests(4, prefix="other").splitlines()])
    m.start()
    s = wait_for(lambda: (lambda s: s if s["error"] and "cannot tell" in
                          s["error"]["message"] else None)(read_status(d)), 15,
                 what="status to say it cannot tell")
    assert s["state"] == "submitting" and s["id"] is None
    assert "results" not in os.listdir(d)
    # Neither batch is taken for ours, nor shown as made elsewhere while unsettled.
    listing = os.listdir(os.path.join(m.path, "a"))
    assert ours not in listing and theirs not in listing
    assert srv.count("POST", f"^{API}$") == 1


def test_refresh_during_a_commit_only_reports(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    d = new_batch(m)
    srv.add_fault(rule(CREATE, action="delay", seconds=1.5))
    w = Writer(d, anthropic_requests(3))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 10, what="the create to be sent")
    # The refresh waits its turn behind the commit (one worker per remote), then polls: it
    # never turns the batch failed, and the commit goes on to its one batch.
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("refresh\n")
    assert read_status(d)["state"] in ("in_progress", "completed")
    w.join(20)
    assert w.error is None
    s = wait_results(d)
    assert s["state"] == "completed" and srv.batches_created == 1


def test_cancel_during_a_commit_cancels_once_the_batch_exists(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=30)
    m = mount_remote(mount_factory, srv)
    d = new_batch(m)
    srv.add_fault(rule(CREATE, action="delay", seconds=1.5))
    w = Writer(d, anthropic_requests(3))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 10, what="the create to be sent")
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    w.join(20)
    assert w.error is None
    s = wait_state(d, "canceled", timeout=20)
    assert srv.batches_created == 1 and srv.count("POST", f"^{API}/[^/]+/cancel$") == 1
    assert s["parts"][0]["state"] == "canceled"


def test_a_failed_cancel_never_rolls_a_finished_batch_back(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=1.0)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cannot cancel")
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(3))
    # Every cancel fails; while its retries go on the batch ends and a poll records it.
    srv.add_fault(rule(CANCEL, status=500, times=0))
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("cancel\n")
    assert e.value.errno == errno.EIO
    s = wait_results(d)
    assert s["state"] == "completed"
    srv.clear_faults()
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:  # polls go on; the state must never go back
        assert read_status(d)["state"] == "completed"
        time.sleep(0.1)


def test_a_part_refused_leaves_the_others_running_and_names_itself(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=2)
    m.expect_log(r"cannot submit|part 2")
    srv.add_fault(rule(CREATE, status=400, skip=1,
                       body={"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "refused for the test"}}))
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(anthropic_requests(6))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed"
    assert s["error"]["message"].startswith("part 2 of 3 (lines 3-4)")
    assert "refused for the test" in s["error"]["message"]
    assert "cannot be written again" in s["error"]["message"]
    assert [p["state"] for p in s["parts"]][1:] == ["failed", "failed"]
    assert "not submitted" in s["parts"][2]["error"]["message"]
    assert srv.batches_created == 1
    with pytest.raises(PermissionError):
        open(os.path.join(d, "requests.jsonl"), "w")
    # Part 1 still runs to its end, and its results are kept.
    s = wait_for(lambda: (lambda s: s if s["parts"][0]["results"] == "ready" else None)(
        read_status(d)), 20, what="part 1's results")
    assert s["results"] == "ready"
    got = [json.loads(x)["custom_id"] for x in results_jsonl(d).splitlines()]
    assert got == ["req-0", "req-1"]


def test_a_batch_taken_for_ours_by_mistake_never_gives_its_results_as_files(fake_server,
                                                                           mount_factory):
    # Our create never takes effect (the fake drops it when the client dies); while batchfs
    # is down another client makes a batch of the same size. It is the only candidate, and
    # the API keeps no identity: adopting it cannot be avoided, but its results are not our
    # requests, so none of them becomes a file here and status says why.
    srv = fake_server("anthropic", processing_s=0.3, create_delay_s=60)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"interrupted|not among")
    d = new_batch(m)
    w = Writer(d, anthropic_requests(4))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 10, what="the create to be sent")
    m.kill()
    w.join(10)
    wait_for(lambda: any(r["method"] == "POST" and r["status"] == "client-gone"
                         for r in srv.requests), 5, what="the fake to drop the create")
    theirs = srv.create_batch(anthropic_requests(4, prefix="other"))
    m.start()
    s = wait_for(lambda: (lambda s: s if s["parts"][0]["results"] == "unavailable" else None)(
        read_status(d)), 20, what="the part's results to be settled")
    assert s["id"] == theirs
    assert "not among the requests" in s["error"]["message"]
    assert "other-" in s["error"]["message"]
    assert "results" not in os.listdir(d) and "results.jsonl" not in os.listdir(d)
    assert srv.count("POST", f"^{API}$") == 1
