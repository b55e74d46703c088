"""Faults between batchfs and the Anthropic API: every batch still ends with all its results and
exactly one batch at the provider (docs/design.md "Exactly once"), across retries, lost answers and
crashes."""
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
LIST = {"method": "GET", "path": f"^{API}$"}
POLL = {"method": "GET", "path": f"^{API}/msgbatch_[^/]+$"}
RESULTS = {"method": "GET", "path": f"^{API}/[^/]+/results$"}
N = 6


def rule(where, **kw):
    return dict(where, **kw)


class Writer(threading.Thread):
    """Writes requests.jsonl in the background: close() is the commit, and blocks while the
    create is retried."""

    def __init__(self, d, body):
        super().__init__(daemon=True)
        self.path = os.path.join(d, "requests.jsonl")
        self.body = body
        self.error = None
        self.done = False

    def run(self):
        try:
            with open(self.path, "w") as f:
                f.write(self.body)
        except OSError as e:
            self.error = e
        self.done = True


def new_batch(m):
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    return d


def result_ids(d):
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        return [json.loads(x)["custom_id"] for x in f.read().splitlines()]


def check_all_results(d, srv, n=N):
    s = wait_results(d)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == n
    assert len(os.listdir(os.path.join(d, "results"))) == n
    assert result_ids(d) == [f"req-{i}" for i in range(n)]
    assert srv.batches_created == 1, srv.batch_ids()
    assert srv.batch_ids() == [s["id"]]
    return s


FAULTS = [
    ("create-429-retry-after", rule(CREATE, status=429, headers={"retry-after": "1"}, times=2),
     3),
    ("create-429-retry-after-ms", rule(CREATE, status=429, headers={"retry-after-ms": "150"},
                                       times=3), 4),
    ("create-529-overloaded", rule(CREATE, status=529, times=2), 3),
    ("create-500", rule(CREATE, status=500, times=1), 2),
    ("create-503-twice", rule(CREATE, status=503, times=2), 3),
    ("create-500-should-retry", rule(CREATE, status=500, headers={"x-should-retry": "true"},
                                     times=2), 3),
    ("create-dropped-before", rule(CREATE, action="drop_before", times=1), 2),
    ("create-dropped-after", rule(CREATE, action="drop_after", times=1), 1),
    ("create-answer-cut", rule(CREATE, action="truncate", after=40, times=1), 1),
    ("create-slow", rule(CREATE, action="delay", seconds=1.5), 1),
    ("poll-503", rule(POLL, status=503, times=2), 1),
    ("poll-dropped", rule(POLL, action="drop_before", times=2), 1),
    ("list-429", rule(LIST, status=429, headers={"retry-after": "0.2"}, times=2), 1),
    ("results-cut-short", rule(RESULTS, action="truncate", after=700, times=2), 1),
    ("results-500", rule(RESULTS, status=500, times=2), 1),
    ("results-dropped", rule(RESULTS, action="drop_before", times=1), 1),
    ("results-slow", rule(RESULTS, action="delay", seconds=1.0), 1),
]


@pytest.mark.parametrize("fault, creates", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_a_fault_still_ends_with_every_result_and_one_batch(fake_server, mount_factory, fault,
                                                            creates):
    srv = fake_server("anthropic", processing_s=0.3, results_chunk=256)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"answer to its creation was lost")
    f = srv.add_fault(fault)
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["error"] is None
    check_all_results(d, srv)
    wait_for(lambda: f.hits == f.times, 10, what="the fault to strike")
    assert srv.count("POST", f"^{API}$") == creates


def test_status_shows_the_attempt_while_a_create_is_retried(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    srv.add_fault(rule(CREATE, status=429, headers={"retry-after": "0.6"}, times=3))
    d = new_batch(m)
    w = Writer(d, anthropic_requests(N))
    w.start()

    def retrying():
        s = read_status(d)
        e = s["error"]
        return s if e and e.get("attempt", 0) >= 3 else None
    s = wait_for(retrying, 10, what="status to show the third attempt")
    assert s["state"] == "submitting" and s["id"] is None
    assert "429 rate_limit_error" in s["error"]["message"]
    assert f"(retrying, attempt {s['error']['attempt']})" in s["error"]["message"]
    assert not w.done
    w.join(15)
    assert w.done and w.error is None
    s = read_status(d)
    assert s["error"] is None and s["state"] in ("in_progress", "completed")
    check_all_results(d, srv)
    assert srv.count("POST", f"^{API}$") == 4


@pytest.mark.parametrize("where, what", [(POLL, "polling"),
                                         (RESULTS, "downloading the results")])
def test_status_shows_the_attempt_while_a_poll_or_download_is_retried(fake_server,
                                                                     mount_factory, where,
                                                                     what):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(N))
    srv.add_fault(rule(where, status=529, headers={"retry-after": "0.6"}, times=3,
                       body={"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "Overloaded"}}))

    def retrying():
        e = read_status(d)["error"]
        return e if e and e.get("attempt", 0) >= 2 else None
    e = wait_for(retrying, 15, what=f"status to show a retried {what}")
    assert e["message"].startswith(what + ": ")
    assert "529 overloaded_error" in e["message"]
    assert f"(retrying, attempt {e['attempt']})" in e["message"]
    s = check_all_results(d, srv)
    assert s["error"] is None


def test_reads_stay_fast_while_a_create_is_slow(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    srv.add_fault(rule(CREATE, action="delay", seconds=2))
    d = new_batch(m)
    w = Writer(d, anthropic_requests(N))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 5, what="the create to be sent")
    t0 = time.monotonic()
    s = read_status(d)
    os.listdir(os.path.join(m.path, "a"))
    assert time.monotonic() - t0 < 1.0
    assert s["state"] == "submitting" and not w.done
    w.join(10)
    assert w.error is None
    check_all_results(d, srv)


def test_kill_9_after_the_create_reached_the_api_then_remount(fake_server, mount_factory):
    # The fake creates the batch, then holds its answer until the client goes away.
    srv = fake_server("anthropic", processing_s=0.5, create_hold_s=60)
    m = mount_remote(mount_factory, srv)
    d = new_batch(m)
    name = os.path.basename(d)
    w = Writer(d, anthropic_requests(N))
    w.start()
    wait_for(lambda: srv.batches_created == 1, 10, what="the create to reach the fake")
    bid = srv.batch_ids()[0]
    m.kill()
    w.join(10)
    assert w.done and w.error is not None and w.error.errno in (errno.ENOTCONN, errno.EIO,
                                                                errno.ECONNABORTED)
    srv.set_config(create_hold_s=0)
    m.start()
    s = wait_state(d, "completed")
    assert s["id"] == bid
    check_all_results(d, srv)
    assert srv.count("POST", f"^{API}$") == 1
    assert os.readlink(os.path.join(m.path, "a", ".by-id", bid)) == "../" + name
    assert bid not in os.listdir(os.path.join(m.path, "a"))  # not shown as made elsewhere


def test_kill_9_while_the_create_is_in_flight_and_it_lands_late(fake_server, mount_factory):
    # The fake logs the POST, then sleeps before acting on it (a delay fault): the daemon
    # dies meanwhile, and the fake creates the batch after the crash. The remount must not
    # conclude "nothing was created" just because the batch is not there yet.
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    srv.add_fault(rule(CREATE, action="delay", seconds=2))
    d = new_batch(m)
    w = Writer(d, anthropic_requests(N))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 10, what="the create to be sent")
    m.kill()
    w.join(10)
    assert w.error is not None
    m.start()
    assert read_status(d)["state"] != "failed"
    s = wait_state(d, "completed", timeout=20)
    assert s["id"] == srv.batch_ids()[0]
    check_all_results(d, srv)
    assert srv.count("POST", f"^{API}$") == 1
    assert s["id"] not in os.listdir(os.path.join(m.path, "a"))
    assert os.listdir(os.path.join(m.path, "a", ".by-id")) == [s["id"]]


def test_kill_9_before_the_create_took_effect_then_remount(fake_server, mount_factory):
    # The fake drops a create whose client left before it acted on it: after the crash the
    # remount keeps looking for reconcile_grace, then says nothing was created, and the user
    # may submit again (once).
    srv = fake_server("anthropic", processing_s=0.3, create_delay_s=60)
    m = mount_remote(mount_factory, srv, reconcile_grace=2)
    m.expect_log(r"interrupted")
    d = new_batch(m)
    w = Writer(d, anthropic_requests(N))
    w.start()
    wait_for(lambda: srv.count("POST", f"^{API}$") == 1, 10, what="the create to be sent")
    m.kill()
    w.join(10)
    assert w.error is not None
    wait_for(lambda: any(r["method"] == "POST" and r["status"] == "client-gone"
                         for r in srv.requests), 5, what="the fake to drop the create")
    m.start()
    s = read_status(d)
    assert s["state"] in ("submitting", "failed")
    if s["state"] == "submitting" and s["error"]:
        assert "looking for it at the provider until" in s["error"]["message"]
    s = wait_state(d, "failed")
    assert s["id"] is None and "nothing was created" in s["error"]["message"]
    assert srv.batches_created == 0
    assert os.stat(os.path.join(d, "requests.jsonl")).st_mode & 0o777 == 0o644
    srv.set_config(create_delay_s=0)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    check_all_results(d, srv)
    assert srv.count("POST", f"^{API}$") == 2


def test_a_batch_being_submitted_is_never_shown_twice(fake_server, mount_factory):
    # A listing that was asked for before the create and answered after it (the create is
    # held) must not turn our own batch into one "made elsewhere".
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    slow_list = srv.add_fault(rule(LIST, action="delay", seconds=0.6))
    wait_for(lambda: slow_list.hits == 1, 10, what="a listing to be under way")
    srv.set_config(create_hold_s=1.2)
    d = new_batch(m)
    w = Writer(d, anthropic_requests(N))
    w.start()
    w.join(10)
    assert w.error is None
    s = check_all_results(d, srv)
    root = os.path.join(m.path, "a")
    wait_for(lambda: srv.count("GET", f"^{API}$") >= 3, 10, what="two more listings")
    assert s["id"] not in os.listdir(root)
    assert os.readlink(os.path.join(root, ".by-id", s["id"])) == "../" + os.path.basename(d)


def test_a_spend_cap_429_is_not_retried(fake_server, mount_factory):
    # Anthropic's tier spend cap is a 429 that retrying cannot cure (spec section 6).
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cannot submit batch")
    message = "You have reached your specified workspace API usage limits."
    srv.add_fault(rule(CREATE, status=429, times=0, body={
        "type": "error", "request_id": "req_011CSpendCap0000000000",
        "error": {"type": "rate_limit_error", "message": message,
                  "details": {"error_code": "enforced_spend_limit_reached"}}}))
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as fh:
            fh.write(anthropic_requests(N))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and message in s["error"]["message"]
    assert "req_011CSpendCap0000000000" in s["error"]["message"]
    assert srv.count("POST", f"^{API}$") == 1 and srv.batches_created == 0


def test_an_unreachable_api_fails_the_submission_after_retries(mount_factory, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused

    class Nowhere:
        url = f"http://127.0.0.1:{port}"
        config = {"api_key": "sk-ant-unused"}
    m = mount_remote(mount_factory, Nowhere)
    m.expect_log(r"cannot submit batch")
    d = new_batch(m)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as fh:
            fh.write(anthropic_requests(N))
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 > 2  # it was retried, with backoff
    st = read_status(d)
    assert st["state"] == "failed" and st["id"] is None
    assert "onnect" in st["error"]["message"] and "(5 attempts)" in st["error"]["message"]
    # certainly not created: the file may be written again
    assert os.stat(os.path.join(d, "requests.jsonl")).st_mode & 0o777 == 0o644


def test_a_same_sized_batch_made_elsewhere_is_not_taken_for_a_lost_create(fake_server,
                                                                         mount_factory):
    # A minute before our submission someone else made a batch of as many requests. Our
    # create is lost before it had any effect: looking for it must not adopt theirs.
    srv = fake_server("anthropic", processing_s=0.3)
    theirs = srv.create_batch(anthropic_requests(N, prefix="theirs"), age_s=60)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"answer to its creation was lost")
    srv.add_fault(rule(CREATE, action="drop_before"))
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    s = wait_results(d)
    assert s["id"] != theirs
    assert srv.count("POST", f"^{API}$") == 2 and srv.batches_created == 2
    assert result_ids(d) == [f"req-{i}" for i in range(N)]


@pytest.mark.parametrize("skew", [-400, 400], ids=["api-clock-behind", "api-clock-ahead"])
def test_a_lost_create_is_found_whatever_the_clock_skew(fake_server, mount_factory, skew):
    # The API's clock is minutes off ours (its Date header says so): the batch whose answer
    # was lost is still recognised, and not sent again.
    srv = fake_server("anthropic", processing_s=0.3)
    srv.advance(skew)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"answer to its creation was lost")
    srv.add_fault(rule(CREATE, action="drop_after"))
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    check_all_results(d, srv)
    assert srv.count("POST", f"^{API}$") == 1


RESULTS = {"method": "GET", "path": r"^/v1/messages/batches/[^/]+/results$"}


def test_results_that_keep_failing_are_given_up_then_refresh_tries_again(fake_server,
                                                                         mount_factory):
    # A lasting cause (here: a 404 on the results of an ended batch, which Anthropic answers
    # for a while right after the end) costs a download per attempt: the attempts are bounded
    # (results_attempts, with growing waits), then results are unavailable with the reason,
    # and `echo refresh > ctl` tries again. (An answer that is not JSONL is no such cause any
    # more: its lines are named as bad at once, test_97_hostile.py.)
    srv = fake_server("anthropic", processing_s=0.2)
    m = mount_remote(mount_factory, srv, results_attempts=3)
    m.expect_log(r"cannot download the results|not valid JSON|result")
    srv.add_fault(RESULTS, action="status", status=404, headers={"x-should-retry": "false"},
                  times=0)
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(3))
    s = wait_for(lambda: (lambda st: st if st["results"] == "unavailable" else None)(
        read_status(d)), 60, what="the results to be given up")
    assert "gave up after 3 failed downloads" in s["error"]["message"], s
    assert srv.count("GET", RESULTS["path"]) == 3
    assert not os.path.exists(os.path.join(d, "results"))
    srv.clear_faults()
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("refresh\n")
    s = wait_results(d)
    assert s["counts"]["succeeded"] == 3 and len(os.listdir(os.path.join(d, "results"))) == 3
    assert srv.count("GET", RESULTS["path"]) == 4


def test_results_attempts_must_be_a_whole_number(batchfs_bin, tmp_path):
    import subprocess
    from conftest import write_config
    for bad in ("0", "x", "2.5"):
        cfg = tmp_path / "config"
        write_config(cfg, {"m": {"provider": "mock", "results_attempts": bad}})
        mnt = tmp_path / "m"
        mnt.mkdir(exist_ok=True)
        p = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path / 'c'}",
                            str(mnt)], capture_output=True, text=True, timeout=20)
        assert p.returncode != 0 and "results_attempts" in p.stderr, (bad, p.stderr)
