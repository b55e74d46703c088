"""Simple prompt lines ({"custom_id", "prompt"}), translated at the commit point into each
provider's native line, and the cost estimate / max_cost of a submission.

The expected native lines and costs are computed here from the rules the docs state
(docs/semantics.md "Prompt lines" and "Cost") and a price table written by the test."""
import errno
import json
import os

import pytest

from conftest import unique
from bfs import read_status, wait_results, wait_state
from mount import wait_for
from fake_anthropic import mount_remote
from test_80_openai import Flavour, new_batch, only_batch
from test_85_azure import AzureFlavour
from test_90_vertex import section as vertex_section, service_account_file, sa_key  # noqa: F401

PRICES = {  # model: (input, output, cache write, cache read) USD per million tokens
    "claude-test": (3.0, 15.0, 3.75, 0.3),
    "claude-other": (1.0, 5.0, 1.25, 0.1),
    "gpt-4o-mini": (0.075, 0.3, 0.0, 0.075),
    "gpt-4o-mini-batch": (0.5, 2.0, 0.0, 0.5),
    "claude-3-5-haiku": (0.4, 2.0, 0.5, 0.04),
}


def price_file(tmp_path, rows=PRICES):
    p = tmp_path / unique("prices")
    with open(p, "w") as f:
        f.write("# date: 2026-01-01\n# source: https://example.invalid/prices\n\n")
        for m, v in rows.items():
            f.write(m + "\t" + "\t".join(str(x) for x in v) + "\n")
    return str(p)


def compact(o):
    """JSON as batchfs writes it (cJSON, unformatted): no spaces, UTF-8 kept."""
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def plines(*lines):
    return "".join(compact(x) + "\n" for x in lines)


def native(fmt, p, model, max_tokens, temperature=None):
    """The native line a prompt line p becomes (the documented translation, key order
    included)."""
    sys_ = p.get("system")
    model = p.get("model", model)
    mt = p.get("max_tokens", max_tokens)
    t = p.get("temperature", temperature)
    if fmt in ("openai", "azure"):
        body = {"model": model, "max_completion_tokens": mt}
        if t is not None:
            body["temperature"] = t
        msgs = ([{"role": "system", "content": sys_}] if sys_ else []) + \
            [{"role": "user", "content": p["prompt"]}]
        body["messages"] = msgs
        return {"custom_id": p["custom_id"], "method": "POST",
                "url": "/chat/completions" if fmt == "azure" else "/v1/chat/completions",
                "body": body}
    req = {}
    if fmt != "vertex" or "model" in p:
        req["model"] = model
    if fmt == "vertex":
        req["anthropic_version"] = "vertex-2023-10-16"
    req["max_tokens"] = mt
    if t is not None:
        req["temperature"] = t
    if sys_:
        req["system"] = sys_
    req["messages"] = [{"role": "user", "content": p["prompt"]}]
    return {"custom_id": p["custom_id"], "request" if fmt == "vertex" else "params": req}


def undated(model):
    """The table's row name of a model id with a snapshot date (docs: "Cost")."""
    import re
    return re.sub(r"([-@]\d{8}|-\d{4}-\d{2}-\d{2})$", "", model)


def estimate(fmt, natives, default_model=None, prices=PRICES):
    """Upper bound per the docs: input tokens <= bytes of messages + system as compact JSON,
    output tokens <= max_tokens; priced per model from the table."""
    per = {}
    for n in natives:
        req = n.get("params") or n.get("body") or n.get("request")
        model = req.get("model", default_model)
        inp = sum(len(compact(req[k]).encode()) for k in ("messages", "system") if k in req)
        out = req.get("max_tokens", req.get("max_completion_tokens"))
        a = per.setdefault(model, [0, 0, 0])
        a[0] += 1
        a[1] += inp
        a[2] += out
    total = sum((i * prices[undated(m)][0] + o * prices[undated(m)][1]) / 1e6
                for m, (_, i, o) in per.items())
    return total, per


def check_estimate(cost, fmt, natives, default_model=None):
    total, per = estimate(fmt, natives, default_model)
    est = cost["estimate"]
    assert est["upper_bound"] is True and est["reason"] is None
    assert est["usd"] == pytest.approx(total, rel=1e-9)
    got = {m["model"]: [m["requests"], m["input_tokens_max"], m["output_tokens_max"]]
           for m in est["models"]}
    assert got == per
    assert est["prices"]["date"] == "2026-01-01"
    # the cost of the reported usage once the results are in: test_96_files.py checks it
    assert cost["actual"] is None or set(cost["actual"]) == {"usd", "reason"}


def write_expect_error(d, body, code):
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(body)
    assert e.value.errno == code, e.value


def read_bytes(p):
    with open(p, "rb") as f:
        return f.read()


# --- mock ----------------------------------------------------------------------------------

def mock_mount(mount_factory, tmp_path, **keys):
    sec = {"provider": "mock", "mock_delay": "0.3", "price_file": price_file(tmp_path)}
    sec.update({k: str(v) for k, v in keys.items()})
    return mount_factory({"mock": sec})


def test_mixed_prompt_and_native_lines_on_mock(mount_factory, tmp_path):
    m = mock_mount(mount_factory, tmp_path, model="claude-test", max_tokens=64,
                   temperature=0.5)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    prompts = [
        {"custom_id": "p1", "prompt": "What is FUSE?"},
        {"custom_id": "p2", "prompt": "Say \"hi\"\twith tabs and ünïcödé", "system": "Be brief.",
         "max_tokens": 7, "model": "claude-other"},
    ]
    nat = {"custom_id": "n1", "params": {"model": "claude-test", "max_tokens": 16,
                                         "messages": [{"role": "user", "content": "native"}]}}
    # Blank lines and a CRLF line ride along; the file is read back as written.
    body = (compact(prompts[0]) + "\r\n\n" + compact(nat) + "\n" + compact(prompts[1]) +
            "\n").encode()
    with open(os.path.join(d, "requests.jsonl"), "wb") as f:
        f.write(body)
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body
    wait_results(d)
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body
    # The mock echoes the last user message: each prompt went out as a user message.
    for p in prompts:
        r = json.loads(read_bytes(os.path.join(d, "results", p["custom_id"] + ".json")))
        assert r["result"]["type"] == "succeeded"
        assert p["prompt"] in r["result"]["message"]["content"][0]["text"]
    natives = [native("anthropic", prompts[0], "claude-test", 64, 0.5), nat,
               native("anthropic", prompts[1], "claude-test", 64, 0.5)]
    check_estimate(read_status(d)["cost"], "anthropic", natives)


def test_prompt_line_without_a_model_is_refused_with_its_line(mount_factory, tmp_path):
    m = mock_mount(mount_factory, tmp_path)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    body = plines({"custom_id": "a", "prompt": "x", "model": "claude-test"},
                  {"custom_id": "b", "params": {"model": "claude-test", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "y"}]}},
                  {"custom_id": "c", "prompt": "no model here"})
    write_expect_error(d, body, errno.EINVAL)
    s = read_status(d)
    assert s["state"] == "rejected"
    assert s["error"]["line"] == 3
    assert "model" in s["error"]["message"] and "[mock]" in s["error"]["message"]


def test_bad_prompt_fields_name_their_line(mount_factory, tmp_path):
    m = mock_mount(mount_factory, tmp_path, model="claude-test")
    for bad, word in [({"custom_id": "x", "prompt": ""}, "prompt"),
                      ({"custom_id": "x", "prompt": "p", "max_tokens": 0}, "max_tokens"),
                      ({"custom_id": "x", "prompt": "p", "temperature": 1.5}, "temperature"),
                      ({"custom_id": "x", "prompt": "p", "extra": 1}, "extra"),
                      ({"custom_id": "x y", "prompt": "p"}, "custom_id")]:
        d = os.path.join(m.path, "mock", unique())
        os.mkdir(d)
        write_expect_error(d, plines({"custom_id": "ok", "prompt": "fine"}, bad), errno.EINVAL)
        s = read_status(d)
        assert s["state"] == "rejected" and s["error"]["line"] == 2, s
        assert word in s["error"]["message"], s


def test_parts_are_planned_over_the_translated_bytes(mount_factory, tmp_path):
    prompts = [{"custom_id": f"r{i}", "prompt": f"q{i}"} for i in range(6)]
    natives = [compact(native("anthropic", p, "claude-test", 32)) for p in prompts]
    size = len(natives[0]) + 1
    assert all(len(n) + 1 == size for n in natives)
    user = plines(*prompts)
    # Two translated lines fit a part; the user's (shorter) file would fit in one.
    limit = 2 * size + 1
    assert len(user) <= limit
    m = mock_mount(mount_factory, tmp_path, model="claude-test", max_tokens=32,
                   max_bytes=limit)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(user)
    wait_results(d)
    s = read_status(d)
    assert [(p["first_line"], p["last_line"]) for p in s["parts"]] == [(1, 2), (3, 4), (5, 6)]
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(
        p["custom_id"] + ".json" for p in prompts)
    assert read_bytes(os.path.join(d, "requests.jsonl")) == user.encode()


def test_max_cost_over_the_estimate_fails_close_with_edquot(mount_factory, tmp_path):
    prompts = [{"custom_id": f"r{i}", "prompt": "word " * 50} for i in range(4)]
    natives = [native("anthropic", p, "claude-test", 1000) for p in prompts]
    total, _ = estimate("anthropic", natives)
    cap = round(total / 2, 6)
    m = mock_mount(mount_factory, tmp_path, model="claude-test", max_tokens=1000,
                   max_cost=cap)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    write_expect_error(d, plines(*prompts), errno.EDQUOT)
    s = read_status(d)
    assert s["state"] == "rejected"
    msg = s["error"]["message"]
    assert f"{total:.4f} USD" in msg and f"{cap:.4f} USD" in msg, msg
    assert s["cost"]["estimate"]["usd"] == pytest.approx(total, rel=1e-9)
    assert not os.path.exists(os.path.join(d, "results"))
    # Under the cap, the same file goes.
    d2 = os.path.join(m.path, "mock", unique())
    os.mkdir(d2)
    with open(os.path.join(d2, "requests.jsonl"), "w") as f:
        f.write(plines(*prompts[:1]))
    wait_results(d2)


def test_a_model_without_a_price_gives_null_and_max_cost_refuses(mount_factory, tmp_path):
    pf = price_file(tmp_path)
    m = mount_factory({
        "mock": {"provider": "mock", "mock_delay": "0.3", "price_file": pf},
        "capped": {"provider": "mock", "mock_delay": "0.3", "price_file": pf,
                   "max_cost": "100"},
    })
    line = plines({"custom_id": "a", "prompt": "hi", "model": "claude-unpriced"})
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(line)
    wait_results(d)
    est = read_status(d)["cost"]["estimate"]
    assert est["usd"] is None
    assert est["reason"] == f"no price for model claude-unpriced in {pf}"
    d = os.path.join(m.path, "capped", unique())
    os.mkdir(d)
    write_expect_error(d, line, errno.EDQUOT)
    msg = read_status(d)["error"]["message"]
    assert "cannot be checked against max_cost" in msg and "claude-unpriced" in msg, msg


def test_a_dated_model_id_uses_the_undated_row(mount_factory, tmp_path):
    m = mock_mount(mount_factory, tmp_path)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    p = {"custom_id": "a", "prompt": "hi", "model": "claude-test-20250101"}
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(plines(p))
    wait_results(d)
    est = read_status(d)["cost"]["estimate"]
    n = native("anthropic", p, None, 1024)
    total, per = estimate("anthropic", [n])
    assert list(per) == ["claude-test-20250101"]
    assert est["usd"] == pytest.approx(total, rel=1e-9)


# --- the fakes of real providers --------------------------------------------------------------

def test_prompt_lines_on_anthropic(fake_server, mount_factory, tmp_path):
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv, model="claude-test", max_tokens=20,
                     price_file=price_file(tmp_path))
    prompts = [{"custom_id": "q1", "prompt": "What is FUSE?"},
               {"custom_id": "q2", "prompt": "two", "system": "sys", "temperature": 0.2}]
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    body = plines(prompts[0], {"custom_id": "n", "params": {
        "model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
        prompts[1])
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    wait_results(d)
    bid = read_status(d)["id"]
    got = dict(srv.requests_of(bid))
    for p in prompts:
        assert got[p["custom_id"]] == native("anthropic", p, "claude-test", 20)["params"]
    for c in ("q1", "q2", "n"):
        r = json.loads(read_bytes(os.path.join(d, "results", c + ".json")))
        assert r["result"]["type"] == "succeeded", r
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body.encode()
    natives = [native("anthropic", prompts[0], "claude-test", 20), json.loads(body.split("\n")[1]),
               native("anthropic", prompts[1], "claude-test", 20)]
    check_estimate(read_status(d)["cost"], "anthropic", natives)


def openai_case(fl, tmp_path):
    m = fl.mount(model=fl.model, max_tokens=30, price_file=price_file(tmp_path))
    d = new_batch(m)
    prompts = [{"custom_id": "q1", "prompt": "What is FUSE?", "system": "Be brief."},
               {"custom_id": "q2", "prompt": "second", "temperature": 1.5}]
    nat = fl.line("n", "native", max_completion_tokens=9)
    body = plines(prompts[0]) + nat + "\n" + plines(prompts[1])
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    wait_results(d)
    b = only_batch(fl)
    sent = {r["custom_id"]: r for r in b.requests}
    for p in prompts:
        assert sent[p["custom_id"]]["body"] == native(fl.name, p, fl.model, 30)["body"]
    assert not any(r.get("bad") or r["fail"] for r in b.requests), b.requests
    for c in ("q1", "q2", "n"):
        r = json.loads(read_bytes(os.path.join(d, "results", c + ".json")))
        assert r["response"]["status_code"] == 200, r
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body.encode()
    natives = [native(fl.name, prompts[0], fl.model, 30), json.loads(nat),
               native(fl.name, prompts[1], fl.model, 30)]
    check_estimate(read_status(d)["cost"], fl.name, natives)
    return m


def test_prompt_lines_on_openai(fake_server, mount_factory, tmp_path):
    openai_case(Flavour(fake_server, mount_factory), tmp_path)


def test_prompt_lines_on_azure(fake_server, mount_factory, tmp_path):
    openai_case(AzureFlavour(fake_server, mount_factory), tmp_path)


def test_provider_validation_error_names_the_users_line(fake_server, mount_factory):
    fl = Flavour(fake_server, mount_factory)
    m = fl.mount(model=fl.model)
    d = new_batch(m)
    # The provider's validation refuses line 4 of what it was sent (the translated copy):
    # that is line 4 of the user's file, as translation keeps lines where they are.
    body = plines({"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "y"}) + \
        "\n" + fl.line("c", "z", invalid=True) + "\n"
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    s = wait_state(d, "failed")
    assert s["error"]["line"] == 4, s
    assert "fake 'invalid'" in s["error"]["message"]
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body.encode()


def test_fake_openai_refuses_a_bad_chat_body_per_request(fake_server, mount_factory):
    fl = Flavour(fake_server, mount_factory)
    m = fl.mount()
    d = new_batch(m)
    good = fl.line("ok", "fine")
    bad = json.dumps({"custom_id": "bad", "method": "POST", "url": fl.url,
                      "body": {"model": fl.model, "temperature": 2.5,
                               "messages": [{"role": "user", "content": "x"}]}})
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(good + "\n" + bad + "\n")
    wait_results(d)
    r = json.loads(read_bytes(os.path.join(d, "results", "bad.json")))
    assert r["response"]["status_code"] == 400
    assert json.loads(read_bytes(os.path.join(d, "results", "ok.json")))[
        "response"]["status_code"] == 200


def test_prompt_lines_on_vertex(fake_server, mount_factory, tmp_path, sa_key):  # noqa: F811
    srv = fake_server("vertex")
    home = tmp_path / unique("home")
    home.mkdir()
    keys = {"credentials": service_account_file(home / "sa.json", srv, sa_key),
            "max_tokens": "40", "price_file": price_file(tmp_path)}
    m = mount_factory({"v": vertex_section(srv, **keys)},
                      env={"HOME": str(home), "GOOGLE_APPLICATION_CREDENTIALS": "",
                           "CLOUDSDK_CONFIG": ""})
    d = os.path.join(m.path, "v", unique())
    os.mkdir(d)
    prompts = [{"custom_id": "q1", "prompt": "What is FUSE?", "system": "sys"},
               {"custom_id": "q2", "prompt": "second", "max_tokens": 3}]
    body = plines(*prompts)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    wait_results(d)
    job = srv.job(read_status(d)["id"])
    sent = {cid: req for cid, _, req in job.requests}
    for p in prompts:
        assert sent[p["custom_id"]] == native("vertex", p, None, 40)["request"]
    assert not any(job.is_errored(i) for i in range(len(job.requests)))
    assert srv.create_bodies[0]["model"].endswith("/claude-3-5-haiku@20241022")
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body.encode()
    natives = [native("vertex", p, None, 40) for p in prompts]
    check_estimate(read_status(d)["cost"], "vertex", natives,
                   default_model="claude-3-5-haiku@20241022")


@pytest.mark.parametrize("which", [0, 1], ids=["part-1", "part-2"])
def test_kill_9_mid_commit_of_prompt_lines_sends_each_part_once(fake_server, mount_factory,
                                                                  tmp_path, which):
    """A crash while a part of a prompt-line file is being created: after the restart every
    part is at the provider exactly once, each with the translated lines, sent from the
    copy made before the crash."""
    from test_75_parts_anthropic import CREATE, Writer, rule
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=2, reconcile_grace=30,
                     model="claude-test", max_tokens=9)
    m.expect_log(r"interrupted|lost|looking")
    prompts = [{"custom_id": f"req-{i}", "prompt": f"question {i}"} for i in range(4)]
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    srv.add_fault(rule(CREATE, action="hold", seconds=60, skip=which))
    w = Writer(d, plines(*prompts))
    w.start()
    wait_for(lambda: srv.batches_created == which + 1, 10, what="the fake to create it")
    m.kill()
    w.join(10)
    assert w.error is not None
    m.start()
    s = wait_results(d, timeout=40)
    ids = [p["id"] for p in s["parts"]]
    assert len(ids) == 2 and sorted(srv.batch_ids()) == sorted(ids)
    assert srv.batches_created == 2  # each part exactly once
    sent = [cp for bid in ids for cp in srv.requests_of(bid)]
    assert sent == [(p["custom_id"], native("anthropic", p, "claude-test", 9)["params"])
                    for p in prompts]
    assert read_bytes(os.path.join(d, "requests.jsonl")) == plines(*prompts).encode()


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "contrib", "examples", "make-prompts.py")


def test_the_example_script_makes_readable_ids_that_submit(mount_factory, tmp_path):
    import subprocess
    import sys
    src = tmp_path / "prompts"
    src.mkdir()
    (src / "What is FUSE?.txt").write_text("What is FUSE?")
    (src / "What is FUSE!.txt").write_text("Same name, once cleaned")
    (src / "notes.md").write_text("ünïcödé")
    csvf = tmp_path / "q.csv"
    csvf.write_text('key,question\nrow one,"first, with a comma"\nrow/two,"multi\nline"\n')
    out = subprocess.run([sys.executable, SCRIPT, str(src)], check=True, capture_output=True,
                         text=True).stdout
    got = [json.loads(x) for x in out.splitlines()]
    assert [x["custom_id"] for x in got] == ["What_is_FUSE", "What_is_FUSE-2", "notes"]
    assert {x["prompt"] for x in got} == {"What is FUSE?", "Same name, once cleaned",
                                           "ünïcödé"}
    out2 = subprocess.run([sys.executable, SCRIPT, "--csv", str(csvf), "--id-column", "key",
                           "--prompt-column", "question", "--max-tokens", "50"], check=True,
                          capture_output=True, text=True).stdout
    rows = [json.loads(x) for x in out2.splitlines()]
    assert rows == [{"custom_id": "row_one", "prompt": "first, with a comma", "max_tokens": 50},
                    {"custom_id": "row_two", "prompt": "multi\nline", "max_tokens": 50}]
    m = mock_mount(mount_factory, tmp_path, model="claude-test")
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(out + out2)
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(
        x["custom_id"] + ".json" for x in got + rows)


@pytest.mark.parametrize("key, value, word", [
    ("max_tokens", "0", "whole number"), ("max_tokens", "1.5", "whole number"),
    ("temperature", "3", "0 to 2"), ("max_cost", "five", "US dollars"),
    ("max_cost", "-1", "US dollars"), ("model", "", "empty"), ("price_file", "", "empty")])
def test_bad_prompt_and_cost_keys_fail_the_mount(batchfs_bin, tmp_path, key, value, word):
    import subprocess
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text(f"[x]\nprovider = mock\n{key} = {value}\n")
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"[x] {key}" in r.stderr and word in r.stderr, r.stderr


def test_a_large_mixed_file_is_translated_whole(mount_factory, tmp_path):
    """Thousands of lines (the copy is written in chunks), a native first line (copied from
    the user's file when the first prompt line shows up) and a prompt longer than a chunk."""
    m = mock_mount(mount_factory, tmp_path, model="claude-test", max_tokens=8)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    nat = {"custom_id": "n0", "params": {"model": "claude-test", "max_tokens": 4,
                                         "messages": [{"role": "user", "content": "native"}]}}
    prompts = [{"custom_id": f"p{i}", "prompt": f"question number {i} " + "x" * 150}
               for i in range(3000)]
    big = {"custom_id": "big", "prompt": "y" * (300 * 1024)}
    body = plines(nat, *prompts[:1500], big, *prompts[1500:])
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    s = wait_results(d, timeout=60)
    assert s["counts"]["succeeded"] == 3002
    assert read_bytes(os.path.join(d, "requests.jsonl")) == body.encode()
    for p in (prompts[0], prompts[1499], prompts[2999], big):
        r = json.loads(read_bytes(os.path.join(d, "results", p["custom_id"] + ".json")))
        assert r["result"]["message"]["content"][0]["text"].endswith(p["prompt"][-100:])
    natives = [nat] + [native("anthropic", p, "claude-test", 8)
                       for p in prompts[:1500] + [big] + prompts[1500:]]
    check_estimate(read_status(d)["cost"], "anthropic", natives)
