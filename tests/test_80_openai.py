"""provider = openai against the fake Batch and Files APIs (tests/lib/fake_openai.py).

The scenarios every OpenAI-shaped provider must pass are plain functions taking a Flavour;
test_85_azure.py runs them against the Azure fake too.
"""
import errno
import hashlib
import json
import os
import subprocess
import urllib.request

import pytest

from conftest import unique
from bfs import read_status, wait_results, wait_state
from mount import wait_for

# The Files and Batch subset of OpenAI's OpenAPI document (MIT, licence beside it), from
# https://github.com/openai/openai-openapi
SCHEMA = os.path.join(os.path.dirname(__file__), "data", "openai", "openapi.files-batches.json")


class Flavour:
    """A fake provider and how a mount reaches it."""
    name = "openai"
    key = "sk-test-openai"
    model = "gpt-4o-mini"
    url = "/v1/chat/completions"
    api = "/v1"  # path prefix of the fake's API, for the request log

    def __init__(self, fake_server, mount_factory, **config):
        self.srv = fake_server(self.name, **config)
        self.mount_factory = mount_factory

    def remote(self, **extra):
        r = {"provider": "openai", "base_url": self.srv.base_url, "api_key_env": "BFS_TEST_KEY",
             "poll_interval": "0.2", "list_interval": "0.5"}
        r.update(extra)
        return r

    def mount(self, env=None, **extra):
        e = {"BFS_TEST_KEY": self.key}
        e.update(env or {})
        return self.mount_factory(sections={"o": self.remote(**extra)}, env=e)

    def line(self, custom_id, text="hello", url=None, **body):
        b = {"model": self.model, "messages": [{"role": "user", "content": text}]}
        b.update(body)
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": url or self.url,
                           "body": b}, ensure_ascii=False)

    def requests(self, n, prefix="r", **body):
        return "".join(self.line(f"{prefix}{i}", f"text {i}", **body) + "\n" for i in range(n))

    def count(self, method, path):
        return self.srv.count(method, "^" + self.api + path + "$")

    def batch_files(self):
        return [f for f in self.srv.live_files("batch")]


def new_batch(m, remote="o"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    return d


def write(d, body, name="requests.jsonl"):
    with open(os.path.join(d, name), "w", newline="") as f:
        f.write(body)


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def served_lines(srv, bid):
    """Every result line the fake serves for a batch: output file then error file."""
    with srv.lock:
        b = srv.batches[bid]
        srv.settle(b)
        lines = []
        for fid in (b.output_file_id, b.error_file_id):
            if fid:
                lines += srv.files[fid]["content"].splitlines()
        return lines


def escape_name(cid):
    """docs/semantics.md "results": the file name of a custom_id."""
    raw = cid.encode()
    out = ""
    for i, c in enumerate(raw):
        ch = chr(c)
        safe = ch.isascii() and (ch.isalnum() or ch in "_.-") and not (i == 0 and ch == ".")
        step = ch if safe else "%%%02X" % c
        if len(out) + len(step) > 240:
            keep = 240 - 17
            out = out[:keep]
            if out.endswith("%"):
                out = out[:-1]
            elif len(out) >= 2 and out[-2] == "%":
                out = out[:-2]
            return out + "~" + hashlib.sha256(raw).hexdigest()[:16]
        out += step
    return out


def check_results(d, srv, bid, ids, foreign=False):
    """results/ holds exactly the fake's lines, byte for byte; results.jsonl is them in
    request order (ids), or for a batch made elsewhere in the order the fake served them."""
    served = served_lines(srv, bid)
    by_id = {json.loads(x)["custom_id"]: x for x in served}
    assert sorted(by_id) == sorted(ids)
    names = sorted(os.listdir(os.path.join(d, "results")))
    assert names == sorted(escape_name(c) + ".json" for c in ids)
    for c in ids:
        p = os.path.join(d, "results", escape_name(c) + ".json")
        assert read(p) == by_id[c] + b"\n"
        assert os.stat(p).st_size == len(by_id[c]) + 1
    order = [json.loads(x)["custom_id"] for x in served] if foreign else ids
    assert read(os.path.join(d, "results.jsonl")) == b"".join(by_id[c] + b"\n" for c in order)
    return {c: json.loads(by_id[c]) for c in ids}


def only_batch(fl):
    with fl.srv.lock:
        assert len(fl.srv.batches) == 1, list(fl.srv.batches)
        return next(iter(fl.srv.batches.values()))


# --- scenarios shared with Azure ---------------------------------------------------------------

def scenario_whole_life(fl):
    m = fl.mount()
    d = new_batch(m)
    # A blank line and a CRLF line: accepted here, never sent as such.
    body = fl.line("a", "first") + "\r\n\n" + fl.line("b", "second", fail=True) + "\n" + \
        fl.line("c", "third")
    write(d, body)
    s = read_status(d)
    assert s["state"] in ("validating", "in_progress", "finalizing", "completed")
    b = only_batch(fl)
    assert s["id"] == b.id and s["provider"] == fl.name
    assert read(os.path.join(d, "id")) == (b.id + "\n").encode()
    assert os.readlink(os.path.join(m.path, "o", ".by-id", b.id)) == "../" + os.path.basename(d)
    up = fl.srv.uploads[0]
    assert up["purpose"] == "batch"
    assert up["fields"] == ["expires_after[anchor]", "expires_after[seconds]", "purpose"]
    assert up["filename"].endswith(".jsonl") and not up["chunked"]
    assert up["content"] == "\n".join([fl.line("a", "first"), fl.line("b", "second", fail=True),
                                       fl.line("c", "third")]).encode() + b"\n"
    create = fl.srv.creates[0]
    assert create["completion_window"] == "24h"
    assert create["input_file_id"] == b.input_file_id
    assert create["metadata"]["batchfs_identity"].startswith("bfs-")
    assert create["metadata"]["batchfs_name"] == os.path.basename(d)
    assert read(os.path.join(d, "requests.jsonl")) == body.encode()
    s = wait_state(d, "completed")
    assert s["counts"] == {"total": 3, "processing": 0, "succeeded": 2, "errored": 1,
                           "canceled": 0, "expired": 0}
    assert s["ended_at"].endswith("Z") and s["created_at"].endswith("Z")
    assert s["error"] is None
    wait_results(d)
    res = check_results(d, fl.srv, b.id, ["a", "b", "c"])
    assert res["a"]["response"]["status_code"] == 200
    assert res["b"]["response"]["status_code"] == 400
    # The input file goes once the results are in (it counts against Azure's file cap).
    wait_for(lambda: b.input_file_id in fl.srv.deleted_files, 10, what="input deleted")
    assert not fl.batch_files()
    for r in fl.srv.requests:
        assert r["status"] not in (401, 404), r
    return m, d, b


def scenario_cancel_keeps_partial_results(fl):
    fl.srv.set_config(processing_s=4.0)
    m = fl.mount()
    d = new_batch(m)
    ids = [f"r{i}" for i in range(8)]
    write(d, fl.requests(8))
    wait_for(lambda: read_status(d)["counts"]["succeeded"] >= 2, 10, 0.05, what="progress")
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    assert read_status(d)["state"] in ("canceling", "canceled")
    s = wait_state(d, "canceled")
    c = s["counts"]
    assert c["total"] == 8 and c["processing"] == 0
    assert c["succeeded"] >= 2 and c["canceled"] >= 1
    assert c["succeeded"] + c["errored"] + c["canceled"] == 8
    wait_results(d)
    res = check_results(d, fl.srv, only_batch(fl).id, ids)
    ok = [r for r in res.values() if r["response"] and r["response"]["status_code"] == 200]
    cancelled = [r for r in res.values() if r["error"] and r["error"]["code"] ==
                 "batch_cancelled"]
    assert len(ok) == c["succeeded"] and len(cancelled) == c["canceled"]
    assert fl.count("POST", "/batches/[^/]+/cancel") == 1


def scenario_failed_at_validation(fl):
    m = fl.mount()
    d = new_batch(m)
    # Provider line 3 is the user's line 5: two blank lines were not uploaded.
    write(d, fl.line("a") + "\n\n" + fl.line("b") + "\n \n" + fl.line("c", invalid=True) + "\n")
    s = wait_state(d, "failed")
    assert s["provider_state"].lower() == "failed"
    assert s["error"]["line"] == 5, s
    assert "invalid_request" in s["error"]["message"]
    assert "fake 'invalid'" in s["error"]["message"]
    s = wait_for(lambda: read_status(d)["results"] == "unavailable" and read_status(d), 5,
                 what="results unavailable")
    assert s["counts"]["succeeded"] == 0 and s["id"] == only_batch(fl).id
    assert not os.path.exists(os.path.join(d, "results"))
    # Nothing ran: the file may be written again or resubmitted (docs/semantics.md).
    assert "echo resubmit > ctl" in s["error"]["message"]
    assert os.stat(os.path.join(d, "requests.jsonl")).st_mode & 0o777 == 0o644


def scenario_parts(fl):
    """A file over max_requests goes in parts, one upload and one batch each; a part the
    provider fails names the user's line (the part's line 1 is the file's line 6 here)."""
    m = fl.mount(max_requests="2")
    d = new_batch(m)
    write(d, fl.line("a") + "\n" + fl.line("b") + "\n\n" + fl.line("c") + "\n" + fl.line("e") +
          "\n" + fl.line("f", invalid=True) + "\n")
    s = read_status(d)
    assert [(p["first_line"], p["last_line"]) for p in s["parts"]] == [(1, 2), (4, 5), (6, 6)]
    ids = [p["id"] for p in s["parts"]]
    with fl.srv.lock:
        assert sorted(fl.srv.batches) == sorted(ids)
    assert len(fl.srv.uploads) == 3
    with open(os.path.join(d, "id")) as f:
        assert f.read().split() == ids
    s = wait_for(lambda: (lambda s: s if s["results"] == "ready" else None)(read_status(d)),
                 20, what="results of the parts that ran")
    assert s["state"] == "failed"
    assert [p["state"] for p in s["parts"]] == ["completed", "completed", "failed"]
    assert s["parts"][2]["error"]["line"] == 6 and s["error"]["line"] == 6
    assert s["error"]["message"].startswith("part 3 of 3 (lines 6-6): ")
    assert [json.loads(x)["custom_id"] for x in
            read(os.path.join(d, "results.jsonl")).splitlines()] == ["a", "b", "c", "e"]
    for bid, want in zip(ids[:2], (["a", "b"], ["c", "e"])):
        served = {json.loads(x)["custom_id"]: x for x in served_lines(fl.srv, bid)}
        assert sorted(served) == want
        for c in want:
            assert read(os.path.join(d, "results", c + ".json")) == served[c] + b"\n"


def scenario_custom_ids_escaped(fl):
    ids = ["a/b", "..", ".hidden", "with space", "ünïcödé ✓", "x" * 300, "%41", "plain-id_1.2"]
    m = fl.mount()
    d = new_batch(m)
    write(d, "".join(fl.line(c, f"text {i}") + "\n" for i, c in enumerate(ids)))
    wait_state(d, "completed")
    wait_results(d)
    res = check_results(d, fl.srv, only_batch(fl).id, ids)
    for i, c in enumerate(ids):
        assert res[c]["custom_id"] == c
    names = os.listdir(os.path.join(d, "results"))
    assert all(len(n.encode()) <= 255 for n in names)
    assert "a%2Fb.json" in names and "%2E%2E.json" not in names and "%2E..json" in names
    assert "%2Ehidden.json" in names


def scenario_made_elsewhere_appears(fl):
    lines = [fl.line(f"x{i}", f"elsewhere {i}") for i in range(3)]
    bid = fl.srv.create_batch(lines, endpoint=fl.url)
    m = fl.mount()
    root = os.path.join(m.path, "o")
    wait_for(lambda: bid in os.listdir(root), 10, what="the foreign batch to appear")
    d = os.path.join(root, bid)
    assert not os.path.islink(d)
    s = wait_state(d, "completed")
    assert s["name"] == bid and s["id"] == bid
    os.listdir(d)  # looking inside asks for its results
    wait_results(d)
    check_results(d, fl.srv, bid, [f"x{i}" for i in range(3)], foreign=True)
    assert len(fl.srv.creates) == 0 and len(fl.srv.uploads) == 0


def _start_copy(src, d):
    return subprocess.Popen(["cp", str(src), os.path.join(d, "requests.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scenario_kill_before_create(fl, tmp_path, fault_path):
    """kill -9 while the upload (or, for Azure, the wait for it) is under way: no batch, and
    the upload is deleted when the next start settles the submission."""
    src = tmp_path / "req.jsonl"
    src.write_text(fl.requests(3))
    m = fl.mount(reconcile_grace="1")
    d = new_batch(m)
    fl.srv.add_fault(method="GET" if "/files/" in fault_path else "POST",
                     path=fault_path, action="delay", seconds=2.0)
    cp = _start_copy(src, d)
    wait_for(lambda: fl.srv.count(None, fault_path) >= 1, 10, what="the request to block")
    m.kill()
    assert cp.wait(10) != 0
    wait_for(lambda: len(fl.batch_files()) == 1, 10, what="the upload to land at the fake")
    assert fl.count("POST", "/batches") == 0
    m.start()
    s = wait_state(d, "failed")
    assert "nothing was created" in s["error"]["message"], s
    wait_for(lambda: not fl.batch_files(), 10, what="the orphan upload to be deleted")
    assert len(fl.srv.deleted_files) == 1
    assert "deleted uploaded file" in m.read_log()
    # The user writes again: one batch in the end.
    subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)
    wait_state(d, "completed")
    assert len(fl.srv.batches) == 1 and len(fl.srv.uploads) == 2
    wait_for(lambda: not fl.batch_files(), 10, what="its input deleted once results are in")
    m.expect_log(r"was interrupted")


def scenario_kill_before_create_answer(fl, tmp_path):
    src = tmp_path / "req.jsonl"
    src.write_text(fl.requests(3))
    m = fl.mount()
    d = new_batch(m)
    fl.srv.add_fault(method="POST", path=f"^{fl.api}/batches$", action="delay", seconds=1.5)
    cp = _start_copy(src, d)
    wait_for(lambda: fl.count("POST", "/batches") == 1, 10, what="the create to be sent")
    m.kill()
    assert cp.wait(10) != 0
    wait_for(lambda: len(fl.srv.batches) == 1, 10, what="the create to take effect")
    m.start()
    b = only_batch(fl)
    s = wait_for(lambda: read_status(d)["id"] and read_status(d), 10, what="the batch adopted")
    assert s["id"] == b.id and s["error"] is None
    wait_state(d, "completed")
    wait_results(d)
    assert fl.count("POST", "/batches") == 1 and len(fl.srv.uploads) == 1
    # Its one upload served the batch, and goes once the results are in.
    wait_for(lambda: fl.srv.deleted_files == [b.input_file_id], 10, what="input deleted")
    assert not fl.batch_files()
    # Nothing of it shows as a batch made elsewhere.
    assert sorted(os.listdir(os.path.join(m.path, "o"))) == [".by-id", os.path.basename(d)]
    assert os.path.islink(os.path.join(m.path, "o", ".by-id", b.id))


# --- OpenAI -----------------------------------------------------------------------------------

@pytest.fixture
def oai(fake_server, mount_factory):
    return Flavour(fake_server, mount_factory)


def test_whole_life_upload_create_poll_results(oai):
    m, d, b = scenario_whole_life(oai)
    for r in oai.srv.requests:
        assert r["headers"].get("Authorization") == "Bearer " + oai.key
    assert oai.key not in m.read_log()


def test_cancel_keeps_partial_results(oai):
    scenario_cancel_keeps_partial_results(oai)


def test_batch_failed_at_validation_names_the_users_line(oai):
    scenario_failed_at_validation(oai)


def test_a_file_over_max_requests_goes_in_parts(oai):
    scenario_parts(oai)


def test_custom_ids_needing_escaping_round_trip(oai):
    scenario_custom_ids_escaped(oai)


def test_batch_made_directly_on_the_provider_appears(oai):
    scenario_made_elsewhere_appears(oai)


def test_kill_during_upload_leaves_no_batch_and_no_upload(oai, tmp_path):
    scenario_kill_before_create(oai, tmp_path, "^/v1/files$")


def test_kill_before_the_create_answer_adopts_the_batch(oai, tmp_path):
    scenario_kill_before_create_answer(oai, tmp_path)


def test_lost_upload_answer_is_found_by_name_not_repeated(oai):
    oai.srv.add_fault(method="POST", path="^/v1/files$", action="drop_after")
    m = oai.mount()
    d = new_batch(m)
    write(d, oai.requests(2))
    b = only_batch(oai)
    assert len(oai.srv.uploads) == 1 and not oai.srv.deleted_files
    assert [f["id"] for f in oai.batch_files()] == [b.input_file_id]
    assert oai.srv.count("GET", "^/v1/files$") == 1
    wait_state(d, "completed")


def test_upload_cut_before_it_happened_is_sent_again(oai):
    oai.srv.add_fault(method="POST", path="^/v1/files$", action="drop_before")
    m = oai.mount()
    d = new_batch(m)
    write(d, oai.requests(2))
    b = only_batch(oai)
    assert oai.count("POST", "/files") == 2 and len(oai.srv.uploads) == 1
    assert [f["id"] for f in oai.batch_files()] == [b.input_file_id]


def test_lost_create_answer_is_found_not_repeated(oai):
    oai.srv.add_fault(method="POST", path="^/v1/batches$", action="drop_after")
    m = oai.mount()
    d = new_batch(m)
    write(d, oai.requests(2))
    b = only_batch(oai)
    assert read_status(d)["id"] == b.id
    assert oai.count("POST", "/batches") == 1
    m.expect_log("answer to its creation was lost")


def test_refused_create_fails_the_close_and_deletes_the_upload(oai):
    oai.srv.add_fault(method="POST", path="^/v1/batches$", status=400,
                      body={"error": {"message": "Enqueued token limit reached.",
                                      "type": "invalid_request_error", "param": None,
                                      "code": "token_limit_exceeded"}})
    m = oai.mount()
    m.expect_log("cannot submit batch")
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, oai.requests(2))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and s["id"] is None
    assert "Enqueued token limit reached" in s["error"]["message"]
    assert "HTTP 400" in s["error"]["message"]
    assert not oai.batch_files() and len(oai.srv.deleted_files) == 1
    # Nothing was created: the file may be written again, and then it goes through.
    write(d, oai.requests(2))
    assert read_status(d)["state"] in ("validating", "in_progress", "finalizing", "completed")
    assert len(oai.srv.batches) == 1


def test_listing_follows_every_page(oai):
    oai.srv.set_config(list_max_limit=2)
    ids = [oai.srv.create_batch([oai.line(f"p{i}")]) for i in range(5)]
    m = oai.mount()
    root = os.path.join(m.path, "o")
    wait_for(lambda: set(ids) <= set(os.listdir(root)), 10, what="every listed batch")
    assert oai.srv.count("GET", "^/v1/batches$") >= 3


def test_expired_batch_keeps_the_results_it_has(oai):
    oai.srv.set_config(processing_s=6.0, expire_s=2.0)
    m = oai.mount()
    d = new_batch(m)
    write(d, oai.requests(6))
    s = wait_state(d, "expired", timeout=20)
    c = s["counts"]
    assert c["expired"] >= 1 and c["succeeded"] >= 1 and c["processing"] == 0
    wait_results(d)
    res = check_results(d, oai.srv, only_batch(oai).id, [f"r{i}" for i in range(6)])
    assert sum(1 for r in res.values() if r["error"] and
               r["error"]["code"] == "batch_expired") == c["expired"]


def test_completed_with_every_request_failed_has_only_an_error_file(oai):
    m = oai.mount()
    d = new_batch(m)
    write(d, oai.requests(3, fail=True))
    s = wait_state(d, "completed")
    assert s["counts"]["errored"] == 3 and s["counts"]["succeeded"] == 0
    wait_results(d)
    b = only_batch(oai)
    assert b.output_file_id is None and b.error_file_id
    check_results(d, oai.srv, b.id, ["r0", "r1", "r2"])


def test_results_download_cut_in_the_second_file_starts_over(oai):
    """A retried error-file download must not drop the output file's lines: the whole
    download starts over."""
    lines = [oai.line(f"k{i}", f"t{i}", fail=(i % 2 == 1)) for i in range(6)]
    bid = oai.srv.create_batch(lines)
    oai.srv.advance(10)
    served_lines(oai.srv, bid)  # settles it: its files exist from here on
    b = oai.srv.batches[bid]
    first = oai.srv.files[b.error_file_id]["content"].index(b"\n") + 1
    oai.srv.add_fault(method="GET", path=f"^/v1/files/{b.error_file_id}/content$",
                      action="truncate", after=first + 10)  # one whole line, then cut
    oai.srv.add_fault(method="GET", path=f"^/v1/files/{b.output_file_id}/content$",
                      action="truncate", after=50)
    m = oai.mount()
    root = os.path.join(m.path, "o")
    wait_for(lambda: bid in os.listdir(root), 10, what="the foreign batch to appear")
    d = os.path.join(root, bid)
    os.listdir(d)
    wait_results(d)
    check_results(d, oai.srv, bid, [f"k{i}" for i in range(6)], foreign=True)
    assert oai.srv.count("GET", f"^/v1/files/{b.output_file_id}/content$") == 3
    assert oai.srv.count("GET", f"^/v1/files/{b.error_file_id}/content$") == 2


def test_base_url_with_v1_and_organization_headers(oai):
    m = oai.mount(base_url=oai.srv.url + "/v1/", organization="org-test", project="proj_x")
    d = new_batch(m)
    write(d, oai.requests(1))
    wait_state(d, "completed")
    r = [x for x in oai.srv.requests if x["path"].startswith("/v1/")]
    assert r and all(x["headers"].get("OpenAI-Organization") == "org-test" and
                     x["headers"].get("OpenAI-Project") == "proj_x" for x in r)


@pytest.mark.parametrize("via", ["base_url", "OPENAI_BASE_URL"])
def test_base_url_without_v1_is_used_as_given(oai, mount_factory, via):
    # A proxy at http://host:port that the SDKs call as http://host:port/files: batchfs must
    # call the same paths, not http://host:port/v1/files.
    from fake_openai import FakeOpenAI

    class RootOpenAI(FakeOpenAI):
        prefixes = ("",)

    srv = RootOpenAI().start()
    try:
        env = {"BFS_TEST_KEY": oai.key}
        if via == "base_url":
            remote = oai.remote(base_url=srv.url)
        else:
            remote = oai.remote(base_url="")
            env["OPENAI_BASE_URL"] = srv.url
        m = mount_factory(sections={"o": remote}, env=env)
        d = new_batch(m)
        write(d, oai.requests(1))
        wait_state(d, "completed")
        assert srv.count("POST", "^/files$") == 1 and srv.count(path="^/v1/") == 0
        m.unmount()  # before the server goes
    finally:
        srv.stop()


@pytest.mark.parametrize("lines,word", [
    (['{"custom_id":"a","method":"POST","url":"/chat/completions","body":{"model":"m"}}'],
     "not an endpoint"),
    (['{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}',
      '{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"n"}}'],
     "one model"),
    (['{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}',
      '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}'],
     "duplicate custom_id"),
], ids=["url-without-v1", "mixed-models", "duplicate-id"])
def test_invalid_lines_are_refused_before_anything_is_sent(oai, lines, word):
    m = oai.mount()
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, "\n".join(lines) + "\n")
    assert e.value.errno == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and word in s["error"]["message"]
    assert not oai.srv.uploads


def test_bad_key_fails_the_close_with_the_providers_message(oai):
    m = oai.mount(env={"BFS_TEST_KEY": "sk-wrong"})
    m.expect_log("cannot submit batch")
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, oai.requests(1))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert "HTTP 401" in s["error"]["message"] and "sk-wrong" not in s["error"]["message"]
    assert not oai.srv.batches and not oai.batch_files()


# --- the fake agrees with the OpenAPI document ---------------------------------------------------

def _schema():
    with open(SCHEMA) as f:
        return json.load(f)


def _check(obj, schema, doc, where):
    """A small JSON Schema check: required keys, types, enums; null accepted for optional
    fields (the spec types them non-nullable, the live API sends null: data/openai/README.md)."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        if obj is None:
            return
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    t = schema.get("type")
    types = {"string": str, "integer": int, "object": dict, "array": list, "boolean": bool}
    if t:
        assert isinstance(obj, types[t]) and not (t == "integer" and isinstance(obj, bool)), \
            f"{where}: {obj!r} is not {t}"
    if "enum" in schema:
        assert obj in schema["enum"], f"{where}: {obj!r} not in {schema['enum']}"
    if t == "object":
        for k in schema.get("required", []):
            assert k in obj, f"{where}: {k} missing"
        for k, sub in schema.get("properties", {}).items():
            if k in obj and obj[k] is not None:
                _check(obj[k], sub, doc, f"{where}.{k}")
    if t == "array":
        for i, x in enumerate(obj):
            _check(x, schema.get("items", {}), doc, f"{where}[{i}]")


def _call(srv, method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(srv.url + path, method=method, data=body,
                                 headers={"Authorization": "Bearer " + srv.config["api_key"],
                                          "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_fake_answers_match_the_openapi_document(oai):
    doc = _schema()
    sch = doc["components"]["schemas"]
    content = (oai.line("a") + "\n").encode()
    mp = (b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
          b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
          b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--XyZ--\r\n")
    f = _call(oai.srv, "POST", "/v1/files", mp, "multipart/form-data; boundary=XyZ")
    _check(f, sch["OpenAIFile"], doc, "file")
    assert f["bytes"] == len(content)
    b = _call(oai.srv, "POST", "/v1/batches", json.dumps(
        {"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
         "completion_window": "24h", "metadata": {"k": "v"}}).encode())
    _check(b, sch["Batch"], doc, "batch")
    assert set(b) == set(sch["Batch"]["properties"])
    oai.srv.advance(5)
    b = _call(oai.srv, "GET", "/v1/batches/" + b["id"])
    _check(b, sch["Batch"], doc, "batch")
    assert b["status"] == "completed" and b["request_counts"]["completed"] == 1
    _check(_call(oai.srv, "GET", "/v1/batches?limit=1"), sch["ListBatchesResponse"], doc, "list")
    _check(_call(oai.srv, "GET", "/v1/files?purpose=batch"), sch["ListFilesResponse"], doc,
           "files")
    _check(_call(oai.srv, "DELETE", "/v1/files/" + f["id"]), sch["DeleteFileResponse"], doc,
           "delete")
