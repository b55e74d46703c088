"""The files a batch job needs (docs/semantics.md "wait", "retry.jsonl", "text/", "Cost"):
`wait` blocks until the batch is done without holding up the mount, `retry.jsonl` holds the
requests to send again byte for byte, `text/` the assistant's text of each succeeded result,
and status its usage and actual cost. Every provider's own result shapes, through the fakes.

Expected values are computed here from the result lines batchfs serves (results/), each read
with the provider's documented shape, never hard-coded."""
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import unique
from bfs import anthropic_line, read_status, wait_results
from mount import wait_for
from test_90_vertex import sa_key  # noqa: F401 (a fixture)


def mkbatch(m, body, remote="mock", name=None):
    d = os.path.join(m.path, remote, name or unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    return d


def cat_wait(d, timeout=60):
    """`cat wait` as a user runs it: returns (exit code, parsed JSON or None)."""
    p = subprocess.run(["timeout", str(timeout), "cat", os.path.join(d, "wait")],
                       capture_output=True)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None)


def succeeded_anthropic(line):
    r = json.loads(line)["result"]
    return r["type"] == "succeeded"


def text_anthropic(msg):
    return "".join(b["text"] for b in msg["content"] if b.get("type") == "text")


def request_lines(body):
    """The request lines of a body as bytes with their line ends, by custom_id."""
    out = {}
    for raw in body.encode().splitlines(keepends=True):
        if raw.strip():
            out[json.loads(raw)["custom_id"]] = raw
    return out


def expected_retry(body, results_dir, succeeded):
    """The lines of body (in order, byte for byte) whose result is not succeeded."""
    ok = set()
    if os.path.isdir(results_dir):
        for n in os.listdir(results_dir):
            with open(os.path.join(results_dir, n), "rb") as f:
                line = f.read()
            if succeeded(line):
                ok.add(json.loads(line)["custom_id"])
    want = b""
    for raw in body.encode().splitlines(keepends=True):
        if raw.strip() and json.loads(raw)["custom_id"] not in ok:
            want += raw
    return want


# --- mock ------------------------------------------------------------------------------

def test_wait_returns_status_when_done_and_is_unlisted(mock_mount):
    ids = [f"w{i}" for i in range(5)]
    body = "".join(anthropic_line(c, f"say {c}") + "\n" for c in ids)
    body += anthropic_line("bad", "x", model="mock-error") + "\n"
    d = mkbatch(mock_mount, body)
    assert "wait" not in os.listdir(d)  # so tar, cp -a, grep -r never block
    assert os.path.exists(os.path.join(d, "wait"))
    assert read_status(d)["done"] is False
    rc, s = cat_wait(d)
    assert rc == 0
    assert s["state"] == "completed" and s["results"] == "ready" and s["done"] is True
    now = read_status(d)
    assert {k: now[k] for k in ("state", "counts", "results", "done", "usage")} == \
        {k: s[k] for k in ("state", "counts", "results", "done", "usage")}
    # the documented idiom
    p = subprocess.run(f"cat {d}/wait | jq -e '.state == \"completed\"'", shell=True,
                       capture_output=True)
    assert p.returncode == 0, p.stderr


def test_text_usage_and_retry_mock(mock_mount):
    ids = [f"t{i}" for i in range(6)]
    body = "".join(anthropic_line(c, f"hello {c} text") + "\n" for c in ids)
    body = body[:len(body) // 2] + "\n" + body[len(body) // 2:]  # a blank line inside
    body += anthropic_line("e1", "x", model="mock-error") + "\n"
    d = mkbatch(mock_mount, body)
    rc, s = cat_wait(d)
    assert rc == 0 and s["done"]
    rdir = os.path.join(d, "results")
    tdir = os.path.join(d, "text")
    want_text, usage = {}, {"results": 0, "input_tokens": 0, "output_tokens": 0,
                            "cache_creation_tokens": 0, "cache_read_tokens": 0}
    for n in os.listdir(rdir):
        with open(os.path.join(rdir, n), "rb") as f:
            r = json.loads(f.read())["result"]
        if r["type"] == "succeeded":
            want_text[n[:-len(".json")] + ".txt"] = text_anthropic(r["message"]) + "\n"
            u = r["message"]["usage"]
            usage["results"] += 1
            usage["input_tokens"] += u.get("input_tokens", 0)
            usage["output_tokens"] += u.get("output_tokens", 0)
            usage["cache_creation_tokens"] += u.get("cache_creation_input_tokens") or 0
            usage["cache_read_tokens"] += u.get("cache_read_input_tokens") or 0
    assert sorted(os.listdir(tdir)) == sorted(want_text)
    assert len(want_text) == len(ids)
    for n, t in want_text.items():
        p = os.path.join(tdir, n)
        with open(p, encoding="utf-8") as f:
            assert f.read() == t
        assert os.stat(p).st_size == len(t.encode())
    assert not os.path.exists(os.path.join(tdir, "e1.txt"))
    s = read_status(d)
    got = {k: s["usage"][k] for k in usage}
    assert got == usage
    want = expected_retry(body, rdir, succeeded_anthropic)
    assert want == (anthropic_line("e1", "x", model="mock-error") + "\n").encode()
    with open(os.path.join(d, "retry.jsonl"), "rb") as f:
        assert f.read() == want
    assert os.stat(os.path.join(d, "retry.jsonl")).st_size == len(want)
    assert s["retry"] == {"requests": 1, "reason": None}
    # resubmit only those
    d2 = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d2)
    subprocess.run(["cp", os.path.join(d, "retry.jsonl"), os.path.join(d2, "requests.jsonl")],
                   check=True)
    assert read_status(d2)["counts"]["total"] == 1


def test_retry_empty_when_all_succeeded(mock_mount):
    body = "".join(anthropic_line(f"a{i}") + "\n" for i in range(3))
    d = mkbatch(mock_mount, body)
    assert cat_wait(d)[0] == 0
    assert os.stat(os.path.join(d, "retry.jsonl")).st_size == 0
    with open(os.path.join(d, "retry.jsonl"), "rb") as f:
        assert f.read() == b""
    assert read_status(d)["retry"]["requests"] == 0


def test_wait_canceled_with_partial_results(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "30"}})
    body = "".join(anthropic_line(f"c{i}") + "\n" for i in range(4))
    d = mkbatch(m, body)
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    rc, s = cat_wait(d)
    assert rc == 0 and s["state"] == "canceled" and s["done"]
    want = expected_retry(body, os.path.join(d, "results"), succeeded_anthropic)
    with open(os.path.join(d, "retry.jsonl"), "rb") as f:
        assert f.read() == want
    assert want  # canceled before they ran


def test_wait_interrupt_and_mount_stays_responsive(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "60"}})
    d = mkbatch(m, anthropic_line("h1") + "\n")
    t0 = time.monotonic()
    p = subprocess.run(["timeout", "3", "cat", os.path.join(d, "wait")], capture_output=True)
    assert p.returncode == 124
    assert time.monotonic() - t0 < 10
    # the mount answers at once
    t0 = time.monotonic()
    assert read_status(d)["state"] == "in_progress"
    os.listdir(d)
    assert time.monotonic() - t0 < 2


def blocked_in_read(pid):
    """True when process pid sits in read(2) (x86_64 syscall 0; aarch64 63)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            nr = f.read().split()[0]
    except (OSError, IndexError):
        return False
    return nr in ("0", "63")


def many_waiters(m, n=8):
    d = mkbatch(m, anthropic_line("x1") + "\n")
    procs = [subprocess.Popen(["cat", os.path.join(d, "wait")], stdout=subprocess.PIPE)
             for _ in range(n)]
    try:
        wait_for(lambda: all(blocked_in_read(p.pid) for p in procs), 10,
                 what="every reader blocked in read")
        for _ in range(20):
            t0 = time.monotonic()
            os.listdir(d)
            s = read_status(d)
            with open(os.path.join(d, "ctl")) as f:
                f.read()
            assert time.monotonic() - t0 < 1.0
        assert s["done"] is False, "the batch ended before the readers were checked"
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs)
    for o in outs:
        assert json.loads(o)["done"] is True


def test_many_waiters_do_not_stall_other_reads(mount_factory):
    many_waiters(mount_factory({"mock": {"provider": "mock", "mock_delay": "6"}}))


def test_waiters_leave_a_single_threaded_mount_answering(mount_factory):
    many_waiters(mount_factory({"mock": {"provider": "mock", "mock_delay": "6"}},
                               flags=["-s"]), n=3)


def test_retry_and_text_across_parts_crlf_and_prompt_lines(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "1", "max_requests": "2",
                                "model": "claude-test"}})
    lines = [anthropic_line("p0", "zero"),
             json.dumps({"custom_id": "p1", "prompt": "one", "model": "mock-error"}),
             json.dumps({"custom_id": "p2", "prompt": "two"}),
             anthropic_line("p3", "three", model="mock-error"),
             anthropic_line("p4", "four")]
    body = lines[0] + "\r\n" + lines[1] + "\r\n\r\n" + lines[2] + "\n" + lines[3] + "\r\n" + \
        lines[4]  # the last line without its newline
    d = mkbatch(m, body)
    rc, s = cat_wait(d)
    assert rc == 0 and len(s["parts"]) == 3
    with open(os.path.join(d, "retry.jsonl"), "rb") as f:
        assert f.read() == (lines[1] + "\r\n" + lines[3] + "\r\n").encode()
    assert sorted(os.listdir(os.path.join(d, "text"))) == ["p0.txt", "p2.txt", "p4.txt"]
    with open(os.path.join(d, "text", "p2.txt")) as f:
        assert "two" in f.read()
    assert s["usage"]["results"] == 3 and s["retry"]["requests"] == 2


def test_tools_over_a_finished_batch_dir(mock_mount, tmp_path):
    body = "".join(anthropic_line(f"g{i}") + "\n" for i in range(3))
    body += anthropic_line("ge", model="mock-error") + "\n"
    d = mkbatch(mock_mount, body)
    assert cat_wait(d)[0] == 0
    tools = [["tar", "-cf", str(tmp_path / "a.tar"), "-C", os.path.dirname(d),
              os.path.basename(d)],
             ["cp", "-a", d, str(tmp_path / "cp")],
             ["rsync", "-a", d + "/", str(tmp_path / "rs")],
             ["grep", "-r", "g1", d],
             ["find", d]]
    for t in tools:
        p = subprocess.run(["timeout", "20"] + t, capture_output=True)
        assert p.returncode == 0, (t, p.stderr)
    for sub in ("cp", "rs"):
        with open(tmp_path / sub / "retry.jsonl", "rb") as f:
            assert f.read() == (anthropic_line("ge", model="mock-error") + "\n").encode()
        assert sorted(os.listdir(tmp_path / sub / "text")) == ["g0.txt", "g1.txt", "g2.txt"]
        assert not os.path.exists(tmp_path / sub / "wait")
    # rm -r unlinks what it lists (text/*, retry.jsonl too) and forgets the batch
    subprocess.run(["rm", "-r", d], check=True, timeout=20)
    assert not os.path.exists(d)


# --- the fakes of real providers ---------------------------------------------------------
# Each provider's result shape, as its documentation gives it:
#  Anthropic https://docs.anthropic.com/en/api/retrieving-message-batch-results
#    {"custom_id", "result": {"type", "message": {"content": [{"type": "text", "text"}],
#    "usage"}}}
#  OpenAI https://platform.openai.com/docs/api-reference/batch (output and error files),
#  Azure https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch
#    {"custom_id", "response": {"status_code", "body": {"choices": [{"message":
#    {"content"}}], "usage"}}, "error"}
#  Vertex https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch
#    {"custom_id", "request", "response": <a Claude message>, "status": ""}

def read_results(d):
    rdir = os.path.join(d, "results")
    out = {}
    for n in os.listdir(rdir):
        with open(os.path.join(rdir, n), "rb") as f:
            out[n[:-len(".json")]] = json.loads(f.read())
    return out


def anthropic_view(r):
    """(succeeded, text, usage) of an Anthropic (or Vertex response) message."""
    u = r["usage"]
    return (text_anthropic(r), {"input_tokens": u.get("input_tokens", 0),
                                "output_tokens": u.get("output_tokens", 0),
                                "cache_creation_tokens": u.get("cache_creation_input_tokens") or 0,
                                "cache_read_tokens": u.get("cache_read_input_tokens") or 0})


def view_anthropic(line):
    r = line["result"]
    return anthropic_view(r["message"]) if r["type"] == "succeeded" else None


def view_vertex(line):
    if line.get("status") or not isinstance(line.get("response"), dict):
        return None
    return anthropic_view(line["response"])


def view_openai(line):
    resp = line.get("response")
    if line.get("error") or not resp or not 200 <= resp["status_code"] < 300:
        return None
    body = resp["body"]
    u = body["usage"]
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return (body["choices"][0]["message"]["content"],
            {"input_tokens": u["prompt_tokens"] - cached,
             "output_tokens": u["completion_tokens"],
             "cache_creation_tokens": 0, "cache_read_tokens": cached})


def check_files(d, body, view):
    """wait, text/, usage and retry.jsonl of an ended batch d submitted with body."""
    rc, s = cat_wait(d)
    assert rc == 0 and s["done"], s
    res = read_results(d) if s["results"] == "ready" else {}
    texts, usage, ok = {}, dict.fromkeys(("input_tokens", "output_tokens",
                                          "cache_creation_tokens", "cache_read_tokens"), 0), set()
    for cid, line in res.items():
        v = view(line)
        if v is None:
            continue
        ok.add(cid)
        texts[cid + ".txt"] = v[0] + "\n"
        for k in usage:
            usage[k] += v[1][k]
    if s["results"] == "ready":
        tdir = os.path.join(d, "text")
        assert sorted(os.listdir(tdir)) == sorted(texts)
        for n, t in texts.items():
            with open(os.path.join(tdir, n), encoding="utf-8") as f:
                assert f.read() == t
            assert os.stat(os.path.join(tdir, n)).st_size == len(t.encode())
        st = read_status(d)
        assert st["usage"]["results"] == len(ok)
        assert {k: st["usage"][k] for k in usage} == usage
    want = b"".join(raw for raw in body.encode().splitlines(keepends=True)
                    if raw.strip() and json.loads(raw)["custom_id"] not in ok)
    p = os.path.join(d, "retry.jsonl")
    with open(p, "rb") as f:
        assert f.read() == want
    assert os.stat(p).st_size == len(want)
    assert read_status(d)["retry"]["requests"] == want.count(b"\n")
    return s, ok


def test_anthropic_files(fake_server, mount_factory):
    from fake_anthropic import mount_remote
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv)
    body = "".join(anthropic_line(f"a{i}", f"say a{i} now") + "\n" for i in range(4))
    body += anthropic_line("bad", "x", model="claude-does-not-exist-9") + "\n"
    d = mkbatch(m, body, remote="a")
    s, ok = check_files(d, body, view_anthropic)
    assert s["state"] == "completed" and ok == {f"a{i}" for i in range(4)}


def test_anthropic_expired_and_canceled(fake_server, mount_factory):
    from fake_anthropic import mount_remote
    srv = fake_server("anthropic", processing_s=30.0)
    m = mount_remote(mount_factory, srv)
    body = "".join(anthropic_line(f"x{i}") + "\n" for i in range(3))
    d = mkbatch(m, body, remote="a")
    wait_for(lambda: read_status(d)["id"], 10, what="an id")
    srv.expire(read_status(d)["id"])
    s, ok = check_files(d, body, view_anthropic)
    assert s["state"] == "expired" and not ok
    body2 = "".join(anthropic_line(f"y{i}") + "\n" for i in range(3))
    d2 = mkbatch(m, body2, remote="a")
    wait_for(lambda: read_status(d2)["id"], 10, what="an id")
    with open(os.path.join(d2, "ctl"), "w") as f:
        f.write("cancel\n")
    s, ok = check_files(d2, body2, view_anthropic)
    assert s["state"] == "canceled"


def openai_like(fl, expire=False, cancel=False):
    if expire:
        fl.srv.set_config(processing_s=6.0, expire_s=2.0)
    if cancel:
        fl.srv.set_config(processing_s=30.0)
    m = fl.mount()
    d = os.path.join(m.path, "o", unique())
    os.mkdir(d)
    body = fl.requests(4) + fl.line("f1", "no", fail=True) + "\n" \
        if not (expire or cancel) else fl.requests(4)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    if cancel:
        wait_for(lambda: read_status(d)["id"], 10, what="an id")
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("cancel\n")
    s, ok = check_files(d, body, view_openai)
    return s, ok


def test_openai_files(fake_server, mount_factory):
    from test_80_openai import Flavour
    # cached tokens are counted inside prompt_tokens: usage gives them as cache reads
    s, ok = openai_like(Flavour(fake_server, mount_factory, cached_tokens=4))
    assert s["state"] == "completed" and ok == {f"r{i}" for i in range(4)}
    assert s["usage"]["cache_read_tokens"] == 4 * len(ok)


def test_openai_expired(fake_server, mount_factory):
    from test_80_openai import Flavour
    s, ok = openai_like(Flavour(fake_server, mount_factory), expire=True)
    assert s["state"] == "expired" and len(ok) < 4


def test_openai_canceled(fake_server, mount_factory):
    from test_80_openai import Flavour
    s, ok = openai_like(Flavour(fake_server, mount_factory), cancel=True)
    assert s["state"] == "canceled"


def test_azure_files(fake_server, mount_factory):
    from test_85_azure import AzureFlavour
    s, ok = openai_like(AzureFlavour(fake_server, mount_factory))
    assert s["state"] == "completed" and ok == {f"r{i}" for i in range(4)}


def test_vertex_files(fake_server, mount_factory, tmp_path, sa_key):  # noqa: F811
    from test_90_vertex import section, service_account_file
    srv = fake_server("vertex")
    home = tmp_path / unique("home")
    home.mkdir()
    m = mount_factory({"v": section(srv, credentials=service_account_file(
        home / "sa.json", srv, sa_key))},
        env={"HOME": str(home), "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": ""})
    lines = [{"custom_id": f"v{i}", "request": {
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 20,
        "messages": [{"role": "user", "content": f"tell v{i}" + (" fail-me" if i == 2 else "")}]}}
        for i in range(4)]
    body = "".join(json.dumps(x) + "\n" for x in lines)
    d = mkbatch(m, body, remote="v")
    s, ok = check_files(d, body, view_vertex)
    assert s["state"] == "completed" and ok == {"v0", "v1", "v3"}


def test_foreign_batch_has_no_retry(fake_server, mount_factory):
    from fake_anthropic import mount_remote
    srv = fake_server("anthropic")
    bid = srv.create_batch([{"custom_id": "f1", "params": {
        "model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}])
    m = mount_remote(mount_factory, srv)
    d = os.path.join(m.path, "a", bid)
    wait_for(lambda: os.path.isdir(d), 15, what="discovery")
    rc, s = cat_wait(d)
    assert rc == 0 and s["done"]
    assert not os.path.exists(os.path.join(d, "retry.jsonl"))
    assert s["retry"]["requests"] is None and s["retry"]["reason"]
    assert sorted(os.listdir(os.path.join(d, "text"))) == ["f1.txt"]


def test_reads_as_another_user(shared_mount):
    from test_95_mount import as_nobody
    m = shared_mount("allow_other")
    body = anthropic_line("u1", "other user") + "\n" + \
        anthropic_line("u2", model="mock-error") + "\n"
    d = mkbatch(m, body)
    assert cat_wait(d)[0] == 0
    for path in ("wait", "retry.jsonl", "text/u1.txt", "status"):
        r = as_nobody("timeout", "10", "cat", os.path.join(d, path))
        assert r.returncode == 0, (path, r.stderr)
    r = as_nobody("cat", os.path.join(d, "retry.jsonl"))
    assert r.stdout == anthropic_line("u2", model="mock-error") + "\n"


def test_wait_with_unavailable_results(fake_server, mount_factory):
    from fake_anthropic import mount_remote
    srv = fake_server("anthropic", processing_s=0.1)
    bid = srv.create_batch([{"custom_id": "gone", "params": {
        "model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}])
    wait_for(lambda: srv.batch(bid)["processing_status"] == "ended", 5)
    srv.archive(bid)
    m = mount_remote(mount_factory, srv)
    d = os.path.join(m.path, "a", bid)
    wait_for(lambda: os.path.isdir(d), 10, what="the archived batch to be listed")
    rc, s = cat_wait(d, timeout=20)
    assert rc == 0 and s["results"] == "unavailable" and s["done"]
    assert s["usage"] is None
    assert not os.path.exists(os.path.join(d, "text"))


def test_wait_on_a_batch_the_provider_failed(fake_server, mount_factory):
    from test_80_openai import Flavour
    fl = Flavour(fake_server, mount_factory)
    m = fl.mount()
    d = os.path.join(m.path, "o", unique())
    os.mkdir(d)
    body = fl.requests(2, model="fail-validation")
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    rc, s = cat_wait(d, timeout=20)
    assert rc == 0 and s["state"] == "failed" and s["done"], s
    # nothing ran: every line is to be sent again
    with open(os.path.join(d, "retry.jsonl"), "rb") as f:
        assert f.read() == body.encode()


def usage_cost(u, row):
    """USD of usage u at a price row (input, output, cache write, cache read) per million."""
    return (u["input_tokens"] * row[0] + u["output_tokens"] * row[1] +
            u["cache_creation_tokens"] * row[2] + u["cache_read_tokens"] * row[3]) / 1e6


def test_actual_cost_is_the_reported_usage_at_the_batch_prices(mount_factory, tmp_path):
    from test_95_prompts import PRICES, price_file
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "1",
                                "price_file": price_file(tmp_path)}})
    body = "".join(anthropic_line(f"p{i}", "word " * (i + 1)) + "\n" for i in range(3))
    d = mkbatch(m, body)
    rc, s = cat_wait(d)
    assert rc == 0
    u = s["usage"]
    assert [x["model"] for x in u["models"]] == ["claude-test"]
    want = usage_cost(u, PRICES["claude-test"])
    assert s["cost"]["actual"]["usd"] == pytest.approx(want, rel=1e-9)
    assert s["cost"]["actual"]["reason"] is None
    assert s["cost"]["actual"]["usd"] <= s["cost"]["estimate"]["usd"]


def test_actual_cost_of_a_model_without_a_price_is_null(mount_factory, tmp_path):
    from test_95_prompts import price_file
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "1",
                                "price_file": price_file(tmp_path)}})
    d = mkbatch(m, anthropic_line("n1", model="claude-unpriced") + "\n")
    rc, s = cat_wait(d)
    assert rc == 0
    assert s["usage"]["results"] == 1
    assert s["cost"]["estimate"]["usd"] is None
    assert s["cost"]["actual"]["usd"] is None and "claude-unpriced" in s["cost"]["actual"]["reason"]
