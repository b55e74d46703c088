"""provider = anthropic against the fake Message Batches API (tests/lib/fake_anthropic.py)."""
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import unique
from bfs import anthropic_line, anthropic_requests, read_status, wait_results, wait_state
from fake_anthropic import KEY_ENV, mount_remote
from mount import wait_for

API = "/v1/messages/batches"
# Distinctive, so a leak anywhere is found by a plain byte search.
SECRET = "sk-ant-api03-QmV0dGVyTm90TGVha1RoaXNLZXk-batchfs-test-7f3a9c"


def line(custom_id, text="hello", **params):
    p = {"model": "claude-test", "max_tokens": 16,
         "messages": [{"role": "user", "content": text}]}
    p.update(params)
    return json.dumps({"custom_id": custom_id, "params": p}, separators=(",", ":"))


def submit(m, body, remote="a"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    return d


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def check_results_match_fake(d, srv, bid, request_ids):
    """results/ holds exactly what the fake served, byte for byte, and results.jsonl is those
    lines in request order (request_ids) or, for a batch made elsewhere, in the fake's order."""
    served = srv.result_lines(bid)
    by_id = {json.loads(x)["custom_id"]: x for x in served}
    assert sorted(by_id) == sorted(request_ids)
    names = sorted(os.listdir(os.path.join(d, "results")))
    assert names == sorted(c + ".json" for c in request_ids)
    for c in request_ids:
        p = os.path.join(d, "results", c + ".json")
        assert read(p) == by_id[c] + b"\n"
        assert os.stat(p).st_size == len(by_id[c]) + 1
    want = b"".join(by_id[c] + b"\n" for c in request_ids)
    assert read(os.path.join(d, "results.jsonl")) == want


# --- the fake itself speaks the spec (so the mount tests below mean something) ----------------

def api(srv, method, path, body=None, key=None, headers=None):
    h = {"x-api-key": key or srv.config["api_key"], "anthropic-version": "2023-06-01",
         "content-type": "application/json"}
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    data = body if isinstance(body, bytes) else \
        json.dumps(body).encode() if body is not None else None
    rq = urllib.request.Request(srv.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(rq, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def reqs(ids):
    return {"requests": [json.loads(line(c)) for c in ids]}


@pytest.mark.parametrize("body, headers, status, kind, message", [
    (reqs(["a"]), {"x-api-key": None}, 401, "authentication_error",
     "x-api-key header is required"),
    (reqs(["a"]), {"x-api-key": "sk-ant-wrong"}, 401, "authentication_error",
     "invalid x-api-key"),
    (reqs(["a"]), {"anthropic-version": None}, 400, "invalid_request_error",
     "anthropic-version: header is required"),
    (b"{not json", {}, 400, "invalid_request_error", "The request body is not valid JSON: "),
    ({"requests": []}, {}, 400, "invalid_request_error",
     "requests: List should have at least 1 item after validation, not 0"),
    ({"requests": [{"params": {}}]}, {}, 400, "invalid_request_error",
     "requests.0.custom_id: Field required"),
    (reqs(["ok", "x" * 65]), {}, 400, "invalid_request_error",
     "requests.1.custom_id: String should have at most 64 characters"),
    (reqs(["ok", "a.b"]), {}, 400, "invalid_request_error",
     "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
    (reqs(["d", "e", "d"]), {}, 400, "invalid_request_error",
     "requests: custom_id's must be unique within a batch. Duplicate custom_id found: d"),
], ids=["no-key", "wrong-key", "no-version", "not-json", "empty", "no-custom-id",
        "long-custom-id", "bad-custom-id", "duplicate"])
def test_the_fake_refuses_creates_as_the_api_does(fake_server, body, headers, status, kind,
                                                  message):
    srv = fake_server("anthropic")
    st, h, data = api(srv, "POST", API, body, headers=headers)
    doc = json.loads(data)
    assert st == status
    assert doc["type"] == "error" and doc["error"]["type"] == kind
    assert doc["error"]["message"].startswith(message)
    assert h["request-id"].startswith("req_") and doc["request_id"] == h["request-id"]
    assert srv.batches_created == 0


def test_the_fake_refuses_an_oversized_body_by_its_length(fake_server):
    srv = fake_server("anthropic", max_body_bytes=1000)
    st, _, data = api(srv, "POST", API, reqs([f"r{i}" for i in range(20)]))
    assert st == 413 and json.loads(data)["error"]["type"] == "request_too_large"
    assert srv.batches_created == 0


def test_the_fake_lives_a_batch_like_the_api(fake_server):
    srv = fake_server("anthropic", processing_s=0.3)
    st, h, data = api(srv, "POST", API, reqs(["r1", "r2", "r3"]))
    b = json.loads(data)
    assert st == 200 and list(b) == ["id", "type", "processing_status", "request_counts",
                                     "ended_at", "created_at", "expires_at", "archived_at",
                                     "cancel_initiated_at", "results_url"]
    assert b["id"].startswith("msgbatch_01") and len(b["id"]) == len("msgbatch_") + 24
    assert b["processing_status"] == "in_progress" and b["request_counts"]["processing"] == 3
    assert b["created_at"].endswith("Z") and "." in b["created_at"]
    st, h, data = api(srv, "GET", f"{API}/{b['id']}/results")
    assert st == 404 and h["x-should-retry"] == "false"
    assert json.loads(data)["error"]["message"] == \
        f"Message Batch {b['id']} has no available results."
    wait_for(lambda: srv.batch(b["id"])["processing_status"] == "ended", 5)
    b = json.loads(api(srv, "GET", f"{API}/{b['id']}")[2])
    assert b["results_url"] == f"{srv.url}{API}/{b['id']}/results"
    st, h, data = api(srv, "GET", b["results_url"][len(srv.url):])
    assert st == 200 and h["content-type"] == "application/x-jsonl"
    got = [json.loads(x)["custom_id"] for x in data.split(b"\n")]
    assert sorted(got) == ["r1", "r2", "r3"] and got != ["r1", "r2", "r3"]
    assert not data.endswith(b"\n")
    assert api(srv, "GET", f"{API}/msgbatch_nope")[0] == 404


def test_the_fake_lists_newest_first_in_pages(fake_server):
    srv = fake_server("anthropic")
    ids = [srv.create_batch([json.loads(line("x"))]) for _ in range(5)]
    newest = ids[::-1]
    page = json.loads(api(srv, "GET", f"{API}?limit=2")[2])
    assert [b["id"] for b in page["data"]] == newest[:2] and page["has_more"] is True
    assert page["first_id"] == newest[0] and page["last_id"] == newest[1]
    page = json.loads(api(srv, "GET", f"{API}?limit=2&after_id={newest[3]}")[2])
    assert [b["id"] for b in page["data"]] == newest[4:] and page["has_more"] is False
    page = json.loads(api(srv, "GET", f"{API}?limit=2&before_id={newest[3]}")[2])
    assert [b["id"] for b in page["data"]] == newest[1:3] and page["has_more"] is True
    assert api(srv, "GET", f"{API}?limit=1001")[0] == 400


def test_the_fake_control_surface_over_http(fake_server):
    srv = fake_server("anthropic", processing_s=60)

    def control(method, what, body=None):
        data = json.dumps(body).encode() if body is not None else None
        rq = urllib.request.Request(f"{srv.url}/_control/{what}", data=data, method=method)
        with urllib.request.urlopen(rq, timeout=10) as r:
            return json.loads(r.read())
    b = control("POST", "batches", reqs(["k1", "k2"]))
    assert b["processing_status"] == "in_progress"
    assert control("GET", "stats") == {"batches_created": 1, "batches": 1}
    b = control("POST", f"batches/{b['id']}/expire")
    assert b["processing_status"] == "ended" and b["request_counts"]["expired"] == 2
    b = control("POST", f"batches/{b['id']}/archive")
    assert b["archived_at"] is not None
    assert api(srv, "GET", f"{API}/{b['id']}/results")[0] == 404


# --- through the mount ---------------------------------------------------------------------------

def test_whole_life_from_cp_to_byte_exact_results(fake_server, mount_factory, tmp_path):
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv)
    good = [f"g{i}" for i in range(6)]
    bad = {
        "unknown-model": line("unknown-model", model="claude-does-not-exist-9"),
        "streaming": line("streaming", stream=True),
        "too-many-tokens": line("too-many-tokens", max_tokens=10 ** 6),
        "extra-field": line("extra-field", betas=["x"]),
    }
    body = "".join(line(c, f"say {c}") + "\n" for c in good[:3]) + \
        "".join(v + "\n" for v in bad.values()) + \
        "".join(line(c, f"say {c}") + "\n" for c in good[3:])
    order = good[:3] + list(bad) + good[3:]
    src = tmp_path / "requests.jsonl"
    src.write_text(body)
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)

    s = read_status(d)
    bid = s["id"]
    assert srv.batch_ids() == [bid]
    assert s["provider"] == "anthropic" and s["state"] in ("in_progress", "completed")
    assert s["counts"]["total"] == len(order)
    assert read(os.path.join(d, "id"), "r") == bid + "\n"
    assert os.readlink(os.path.join(m.path, "a", ".by-id", bid)) == "../" + os.path.basename(d)
    # the create body carried each line as written, in order
    assert srv.requests_of(bid) == [(json.loads(x)["custom_id"], json.loads(x)["params"])
                                    for x in body.splitlines()]

    s = wait_state(d, "completed")
    assert s["provider_state"] == "ended"
    s = wait_results(d)
    fb = srv.batch(bid)
    assert s["counts"] == dict(fb["request_counts"], total=len(order))
    assert s["counts"]["succeeded"] == len(good) and s["counts"]["errored"] == len(bad)
    for k in ("created_at", "ended_at", "expires_at"):
        assert s[k] == fb[k][:19] + "Z"
    check_results_match_fake(d, srv, bid, order)
    # the fake serves another order: results.jsonl really was put back in request order
    assert [json.loads(x)["custom_id"] for x in srv.result_lines(bid)] != order
    for c in good:
        r = json.loads(read(os.path.join(d, "results", c + ".json")))
        assert r["result"]["type"] == "succeeded"
        assert r["result"]["message"]["content"][0]["text"] == f"say {c}"
    errors = {c: json.loads(read(os.path.join(d, "results", c + ".json")))["result"]
              for c in bad}
    assert all(e["type"] == "errored" for e in errors.values())
    assert errors["unknown-model"]["error"]["error"]["type"] == "not_found_error"
    assert errors["streaming"]["error"]["error"]["message"] == \
        '"stream=True" is not supported in the Message Batches API'
    assert errors["too-many-tokens"]["error"]["error"]["message"].startswith("max_tokens: ")
    assert errors["extra-field"]["error"]["error"]["message"] == \
        "betas: Extra inputs are not permitted"
    assert srv.batches_created == 1
    assert srv.count("POST", f"^{API}$") == 1


@pytest.mark.parametrize("wire", [
    {"results_crlf": True, "results_final_newline": True},
    {"results_final_newline": True},
    {"results_chunk": 7},
    {"time_suffix": "+00:00"},
    {"chunked_json": False},
    {"live_counts": True},
    {"gzip": True, "results_chunk": 100},
], ids=["crlf", "final-newline", "tiny-chunks", "offset-times", "content-length", "live-counts",
        "gzip"])
def test_wire_variants_give_the_same_files(fake_server, mount_factory, wire):
    srv = fake_server("anthropic", processing_s=0.3, **wire)
    m = mount_remote(mount_factory, srv)
    ids = [f"w{i}" for i in range(5)]
    d = submit(m, "".join(line(c, f"text {c} " * 20) + "\n" for c in ids))
    s = wait_results(d)
    bid = s["id"]
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 5
    assert s["created_at"] == srv.batch(bid)["created_at"][:19] + "Z"
    check_results_match_fake(d, srv, bid, ids)


def test_a_batch_made_elsewhere_appears_by_id_and_its_results_on_first_access(fake_server,
                                                                             mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    ids = [f"e{i}" for i in range(7)]
    bid = srv.create_batch("".join(line(c, f"elsewhere {c}") + "\n" for c in ids))
    root = os.path.join(m.path, "a")
    wait_for(lambda: bid in os.listdir(root), 10, what="the foreign batch to be listed")
    d = os.path.join(root, bid)
    assert os.path.isdir(d) and not os.path.islink(d)
    s = read_status(d)
    assert s["name"] == bid and s["id"] == bid and s["provider"] == "anthropic"
    assert s["counts"]["total"] == 7
    assert read(os.path.join(d, "id"), "r") == bid + "\n"
    s = wait_results(d)
    assert s["state"] == "completed"
    # made elsewhere: results.jsonl keeps the provider's order
    served = srv.result_lines(bid)
    assert read(os.path.join(d, "results.jsonl")) == b"".join(x + b"\n" for x in served)
    check_results_match_fake(d, srv, bid, [json.loads(x)["custom_id"] for x in served])
    assert srv.batches_created == 1


def test_many_batches_made_elsewhere_are_listed_across_pages(fake_server, mount_factory):
    srv = fake_server("anthropic")
    ids = {srv.create_batch([json.loads(line("one"))]) for _ in range(230)}
    m = mount_remote(mount_factory, srv)
    root = os.path.join(m.path, "a")
    wait_for(lambda: ids <= set(os.listdir(root)), 15, what="every batch to be listed")
    assert len(os.listdir(root)) == 230 + 1  # and .by-id
    assert set(os.listdir(os.path.join(root, ".by-id"))) == ids  # in pages too
    assert srv.count("GET", f"^{API}$") >= 3  # 100 per page


def test_results_archived_at_the_provider_are_unavailable(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.1)
    bid = srv.create_batch([json.loads(line("gone"))])
    wait_for(lambda: srv.batch(bid)["processing_status"] == "ended", 5)
    srv.archive(bid)
    m = mount_remote(mount_factory, srv)
    d = os.path.join(m.path, "a", bid)
    wait_for(lambda: os.path.isdir(d), 10, what="the archived batch to be listed")
    s = wait_for(lambda: (lambda s: s if s["results"] == "unavailable" else None)(
        read_status(d)), 10, what="results unavailable")
    assert s["state"] == "completed"
    assert "results" not in os.listdir(d)
    assert srv.count("GET", f"^{API}/{bid}/results$") == 0


def test_an_empty_results_answer_is_unavailable_with_a_reason(fake_server, mount_factory):
    # A 200 with no lines for a batch that had requests must not leave results "downloading".
    srv = fake_server("anthropic", processing_s=0.1)
    srv.add_fault(method="GET", path=r"/results$", action="status", status=200, body=b"",
                  headers={"Content-Type": "application/binary"}, times=0)
    m = mount_remote(mount_factory, srv)
    d = submit(m, line("one") + "\n")
    s = wait_for(lambda: (lambda s: s if s["results"] == "unavailable" else None)(
        read_status(d)), 15, what="results unavailable")
    assert s["state"] == "completed"
    assert "no result lines" in s["error"]["message"]
    assert "results" not in os.listdir(d)


def test_requests_unfinished_at_the_time_limit_come_back_expired(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=60)
    m = mount_remote(mount_factory, srv)
    d = submit(m, anthropic_requests(4))
    bid = read_status(d)["id"]
    srv.expire(bid)
    s = wait_results(d)
    assert s["state"] == "expired" and s["counts"]["expired"] == 4  # every one expired
    for name in os.listdir(os.path.join(d, "results")):
        assert json.loads(read(os.path.join(d, "results", name)))["result"] == \
            {"type": "expired"}


def test_cancel_through_ctl_ends_canceled_with_canceled_results(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=30, cancel_drain_s=0.5)
    m = mount_remote(mount_factory, srv)
    ids = [f"c{i}" for i in range(10)]
    d = submit(m, "".join(line(c) + "\n" for c in ids))
    bid = read_status(d)["id"]
    subprocess.run(["sh", "-c", f"echo cancel > {d}/ctl"], check=True)
    assert srv.count("POST", f"^{API}/{bid}/cancel$") == 1
    s = read_status(d)
    assert s["state"] in ("canceling", "canceled")
    assert srv.batch(bid)["cancel_initiated_at"] is not None
    s = wait_state(d, "canceled")
    assert s["provider_state"] == "ended"
    s = wait_results(d)
    assert s["counts"]["canceled"] == 10 and s["counts"]["processing"] == 0
    check_results_match_fake(d, srv, bid, ids)
    for c in ids:
        assert json.loads(read(os.path.join(d, "results", c + ".json")))["result"] == \
            {"type": "canceled"}
    # once ended, cancel again is a no-op, not an error, and asks nothing of the provider
    subprocess.run(["sh", "-c", f"echo cancel > {d}/ctl"], check=True)
    assert srv.count("POST", f"^{API}/{bid}/cancel$") == 1


def test_the_key_never_leaks(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3, api_key=SECRET)
    m = mount_remote(mount_factory, srv, extra_opts=("debug", "debug_fuse"))
    d = submit(m, anthropic_requests(3))
    wait_results(d)
    subprocess.run(["sh", "-c", f"echo refresh > {d}/ctl"], check=True)
    # the key was used (else this test proves nothing)
    assert all(r["headers"].get("x-api-key") == SECRET for r in srv.requests)
    secret = SECRET.encode()
    with open(f"/proc/{m.pid}/cmdline", "rb") as f:
        assert secret not in f.read()
    for top, _, files in os.walk(m.path):
        for name in files:
            p = os.path.join(top, name)
            if name == "ctl":
                continue
            assert secret not in read(p), p
    m.unmount()
    assert secret not in read(m.log)
    assert "debug" in read(m.log, "r")  # the debug log was on
    found = 0
    for top, _, files in os.walk(m.cache):
        for name in files:
            found += 1
            assert secret not in read(os.path.join(top, name)), name
    assert found


def test_a_wrong_key_fails_the_submission_with_the_api_s_reason(fake_server, mount_factory):
    srv = fake_server("anthropic")
    wrong = "sk-ant-api03-wrong-key-0123456789"
    m = mount_remote(mount_factory, srv, key=wrong)
    m.expect_log(r"401 authentication_error")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(anthropic_requests(2))
    assert e.value.errno == 5  # EIO
    s = read_status(d)
    assert s["state"] == "failed" and s["id"] is None
    msg = s["error"]["message"]
    assert "HTTP 401 authentication_error: invalid x-api-key" in msg
    assert "request_id req_" in msg
    assert wrong not in msg and wrong not in read(m.log, "r")
    # nothing was created, and the file may be written again
    assert srv.batches_created == 0
    assert os.stat(os.path.join(d, "requests.jsonl")).st_mode & 0o777 == 0o644
    srv.set_config(api_key=wrong)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    assert read_status(d)["state"] in ("in_progress", "completed")
    assert srv.batches_created == 1


def test_a_missing_key_variable_refuses_to_mount(fake_server, batchfs_bin, tmp_path):
    srv = fake_server("anthropic")
    cfg = tmp_path / "config"
    cfg.write_text(f"[a]\nprovider = anthropic\nbase_url = {srv.url}\n"
                   f"api_key_env = {KEY_ENV}\n")
    (tmp_path / "m").mkdir()
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path}/c",
                        str(tmp_path / "m")], env=env, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0
    assert KEY_ENV in r.stderr and "not set" in r.stderr


@pytest.mark.parametrize("keys, beta", [({}, None),
                                        ({"anthropic_beta": "message-batches-2024-09-24"},
                                         "message-batches-2024-09-24")],
                         ids=["plain", "beta"])
def test_version_and_beta_headers_are_sent_on_every_call(fake_server, mount_factory, keys,
                                                         beta):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, **keys)
    d = submit(m, anthropic_requests(2))
    wait_results(d)
    subprocess.run(["sh", "-c", f"echo cancel > {d}/ctl"], check=True)
    d2 = submit(m, anthropic_requests(2))
    subprocess.run(["sh", "-c", f"echo cancel > {d2}/ctl"], check=True)
    wait_results(d2)
    seen = set()
    for r in srv.requests:
        h = {k.lower(): v for k, v in r["headers"].items()}
        seen.add((r["method"], r["path"].rsplit("/", 1)[-1] if r["path"] != API else ""))
        assert h.get("anthropic-version") == "2023-06-01", r
        assert h.get("anthropic-beta") == beta, r
        assert h.get("x-api-key") == srv.config["api_key"]
        assert h.get("user-agent", "").startswith("batchfs/")
        if r["method"] == "POST" and r["path"] == API:
            assert h.get("content-type") == "application/json"
        elif r["method"] == "POST":  # cancel: no body, so no (form) content type either
            assert h.get("content-length", "0") == "0" and "content-type" not in h, h
    # create, list, retrieve, cancel and results were all looked at
    assert {("POST", ""), ("GET", ""), ("GET", "results"), ("POST", "cancel")} <= seen
    assert any(m == "GET" and p.startswith("msgbatch_") for m, p in seen)


@pytest.mark.parametrize("config, message", [
    ({"max_body_bytes": 1000}, "HTTP 413 request_too_large: Request exceeds the maximum size"),
    ({"max_requests": 3}, "HTTP 400 invalid_request_error: requests: List should have at "
     "most 3 items after validation, not 5"),
], ids=["too-large", "too-many"])
def test_a_create_the_api_refuses_fails_with_its_message(fake_server, mount_factory, config,
                                                          message):
    srv = fake_server("anthropic", **config)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cannot submit batch")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write("".join(line(f"r{i}", "x" * 200) + "\n" for i in range(5)))
    assert e.value.errno == 5
    s = read_status(d)
    assert s["state"] == "failed" and message in s["error"]["message"]
    assert srv.batches_created == 0
    assert srv.count("POST", f"^{API}$") == 1  # a refusal is not retried


def test_crlf_and_blank_lines_in_requests_reach_the_api_as_json(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.2)
    m = mount_remote(mount_factory, srv)
    body = "\r\n" + anthropic_line("x1") + "\r\n\r\n   " + anthropic_line("x2") + "\r\n" + \
        anthropic_line("x3")
    d = submit(m, body)
    bid = read_status(d)["id"]
    assert [c for c, _ in srv.requests_of(bid)] == ["x1", "x2", "x3"]
    wait_results(d)
    assert srv.batches_created == 1


def test_a_404_on_the_results_of_a_fresh_batch_is_tried_again(fake_server, mount_factory):
    # Right after a batch ends its results URL may answer 404 for a while (a known transient):
    # that is a failed download, tried again, not "unavailable" for good. The batch itself
    # says it is not archived.
    srv = fake_server("anthropic", processing_s=0.1)
    f = srv.add_fault(method="GET", path=r"/results$", action="status", status=404,
                      body={"type": "error", "error": {
                          "type": "not_found_error", "message": "Not Found"}}, times=2)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"404")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(line("one") + "\n" + line("two") + "\n")
    s = wait_results(d, timeout=30)
    assert f.hits == 2
    assert s["counts"]["succeeded"] == 2 and s["results"] == "ready"
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["one.json", "two.json"]
