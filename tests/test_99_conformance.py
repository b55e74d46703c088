"""The conformance suite (issue 13): each behaviour batchfs promises for every provider
(docs/semantics.md), run over every provider family: the offline `mock` and the fakes of
Anthropic, OpenAI, Azure OpenAI and Vertex AI (tests/lib/fake_*.py, which follow the services'
documents: https://docs.anthropic.com/en/api/creating-message-batches,
https://platform.openai.com/docs/api-reference/batch,
https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch,
https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch).

Where a provider cannot do a thing, the case's parametrisation leaves it out through
`families(but=...)`, which takes the reason as its argument: nothing is skipped silently.
The families and their fakes come from tests/lib/hostile.py (as test_97/test_98 use them); the
helpers of test_80_openai.py (escape_name, the OpenAI/Azure served lines) and test_98_crash.py
(the writer thread, the create paths) are imported, not copied.
"""
import errno
import json
import os
import subprocess
import threading
import time

import pytest

from bfs import read_status, wait_results, wait_state
from conftest import unique
from hostile import FAMILIES, family
from mount import wait_for
from test_80_openai import escape_name, served_lines as openai_served_lines
from test_98_crash import CREATE, Writer

ALL = ("mock",) + FAMILIES

# The listing of each fake (docs/semantics.md "Batches made elsewhere").
LIST = {"anthropic": r"^/v1/messages/batches$", "openai": r"^/v1/batches$",
        "azure": r"^/openai(/v1)?/batches$", "vertex": r"/batchPredictionJobs$"}

# The order of the states a batch made here goes through (docs/semantics.md "States").
ORDER = ["draft", "submitting", "validating", "in_progress", "finalizing", "canceling",
         "completed", "canceled", "expired"]


def families(but=None):
    """The families a case runs over: every one but those in `but` ({family: why it cannot
    take part}); the reason is required, so an exclusion always says why."""
    but = but or {}
    assert all(isinstance(why, str) and why for why in but.values())
    return [f for f in ALL if f not in but]


class MockFamily:
    """The offline provider as a family: no server; its "server side" is its state directory
    in the cache (src/provider_mock.c: <cache>/mock/<remote>/<id>.meta and .jsonl)."""
    name = "mock"
    srv = None

    def __init__(self, m, remote):
        self.m = m
        self.remote = remote

    def line(self, cid, text="hello"):
        return json.dumps({"custom_id": cid, "params": {
            "model": "claude-test", "max_tokens": 16,
            "messages": [{"role": "user", "content": text}]}})

    def state_dir(self):
        return os.path.join(self.m.cache, "mock", self.remote)

    def batches_created(self):
        d = self.state_dir()
        return sum(1 for f in os.listdir(d) if f.endswith(".meta")) if os.path.isdir(d) else 0

    def meta(self, bid):
        with open(os.path.join(self.state_dir(), bid + ".meta")) as f:
            return json.load(f)


@pytest.fixture
def make(fake_server, mount_factory):
    """make(name, fake_config=None, **remote_keys) -> a family: its fake (srv), a mount (m) with
    one remote `h` on it, line(custom_id, text), batches_created()."""
    def one(name, fake_config=None, **keys):
        if name == "mock":
            m = mount_factory({"h": {"provider": "mock", "mock_delay":
                                     str(keys.pop("mock_delay", 1)), "list_interval": "0.5",
                                     **{k: str(v) for k, v in keys.items()}}},
                              name=unique("mnt"))
            return MockFamily(m, "h")
        if name == "azure":
            keys.setdefault("min_poll_interval", 0)  # Azure's 60 s floor: not for a test
        return family(name, fake_server, mount_factory, fake_config=fake_config, **keys)
    return one


# --- what each provider serves, and how its results read ------------------------------------

def vertex_served(srv, jid):
    """The predictions lines the fake Vertex wrote for a job, in file name order."""
    job = srv.job(jid)
    bucket, base = job.output_dir()[5:].split("/", 1)
    lines = []
    with srv.lock:
        objs = sorted(srv.objects.items())
    for (b, name), obj in objs:
        if b == bucket and name.startswith(base + "/") and name.endswith(".jsonl"):
            lines += [ln for ln in obj["data"].split(b"\n") if ln]
    return lines


def served(fam, bid):
    """Every result line the provider serves for batch bid (bytes, no line end), in the order
    it serves them; None for mock (its lines are made as they are read: see check_results)."""
    if fam.name == "anthropic":
        return fam.srv.result_lines(bid)
    if fam.name in ("openai", "azure"):
        return openai_served_lines(fam.srv, bid)
    if fam.name == "vertex":
        return vertex_served(fam.srv, bid)
    return None


def text_of(fam, r):
    """The assistant's text of a succeeded result line (docs/semantics.md "text/"), or None
    when the result did not succeed."""
    if fam.name in ("mock", "anthropic"):
        res = r["result"]
        if res["type"] != "succeeded":
            return None
        blocks = res["message"]["content"]
    elif fam.name == "vertex":
        if r.get("status") or not r.get("response"):
            return None
        blocks = r["response"]["content"]
    else:
        resp = r.get("response")
        if not resp or resp["status_code"] != 200:
            return None
        return resp["body"]["choices"][0]["message"]["content"]
    return "".join(b["text"] for b in blocks if b.get("type") == "text")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_results(fam, d, bid, ids, foreign=False):
    """results/ holds exactly the provider's lines, byte for byte, one file per custom_id named
    by the escaping rule; results.jsonl is them in request order (ids) or, for a batch made
    elsewhere, in the provider's; text/ has the text of each succeeded one. Returns the results
    by custom_id."""
    lines = served(fam, bid)
    if lines is None:  # mock: its lines are the cache's; they must agree with each other
        lines = read(os.path.join(d, "results.jsonl")).splitlines()
    by_id = {json.loads(x)["custom_id"]: x for x in lines}
    assert sorted(by_id) == sorted(ids)
    assert sorted(os.listdir(os.path.join(d, "results"))) == \
        sorted(escape_name(c) + ".json" for c in ids)
    for c in ids:
        p = os.path.join(d, "results", escape_name(c) + ".json")
        assert read(p) == by_id[c] + b"\n"
        assert os.stat(p).st_size == len(by_id[c]) + 1
    order = [json.loads(x)["custom_id"] for x in lines] if foreign else ids
    assert read(os.path.join(d, "results.jsonl")) == b"".join(by_id[c] + b"\n" for c in order)
    res = {c: json.loads(by_id[c]) for c in ids}
    texts = {c: text_of(fam, r) for c, r in res.items()}
    want = sorted(escape_name(c) + ".txt" for c, t in texts.items() if t is not None)
    got = sorted(os.listdir(os.path.join(d, "text"))) if want else []
    assert got == want
    for c, t in texts.items():
        if t is not None:
            assert read(os.path.join(d, "text", escape_name(c) + ".txt")) == \
                t.encode() + b"\n"
    return res


def check_retry(fam, d, body, res):
    """retry.jsonl: exactly the lines of requests.jsonl (as written) whose request has no
    succeeded result (res: the results by custom_id; None: no results at all), in file order.
    Returns its bytes."""
    want = b""
    for x in body.encode().splitlines(keepends=True):
        if not x.strip():
            continue
        r = res.get(json.loads(x)["custom_id"]) if res is not None else None
        if r is None or text_of(fam, r) is None:
            want += x
    assert read(os.path.join(d, "retry.jsonl")) == want
    return want


class States(threading.Thread):
    """Samples a batch's status.state until it stops changing to an end state: the states in
    the order they were seen, each once."""

    def __init__(self, d, until=("completed", "canceled", "expired", "failed")):
        super().__init__(daemon=True)
        self.d, self.until, self.seen = d, until, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                st = read_status(self.d)["state"]
            except (OSError, ValueError):
                st = None
            if st and (not self.seen or self.seen[-1] != st):
                self.seen.append(st)
            if st in self.until:
                return
            time.sleep(0.01)


def batch_dir(fam):
    d = os.path.join(fam.m.path, fam.remote, unique("c"))
    os.mkdir(d)
    return d


def body_of(fam, ids):
    return "".join(fam.line(c, f"text {c}") + "\n" for c in ids)


def by_id_names(fam):
    return sorted(os.listdir(os.path.join(fam.m.path, fam.remote, ".by-id")))


# --- whole life ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", families())
def test_whole_life(make, tmp_path, name):
    fam = make(name)
    ids = [f"w{i}" for i in range(4)]
    body = body_of(fam, ids)
    src = tmp_path / "requests.jsonl"
    src.write_text(body)
    d = batch_dir(fam)
    assert read_status(d)["state"] == "draft"
    states = States(d)
    states.start()
    subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)
    s = read_status(d)
    bid = s["id"]
    assert bid and s["provider"] == name and fam.batches_created() == 1
    assert read(os.path.join(d, "id")) == (bid + "\n").encode()
    assert by_id_names(fam) == [bid]
    assert read(os.path.join(d, "requests.jsonl")) == body.encode()
    s = wait_results(d)
    states.join(10)
    # Each state once, in the contract's order, from draft to completed.
    seen = states.seen
    assert seen[0] == "draft" and seen[-1] == "completed", seen
    assert [ORDER.index(x) for x in seen] == sorted(ORDER.index(x) for x in seen), seen
    # close() returns once the provider has it: a state of its run is seen before the end
    assert set(seen) & {"validating", "in_progress", "finalizing"}, seen
    assert s["state"] == "completed" and s["error"] is None, s
    assert s["counts"] == {"total": 4, "processing": 0, "succeeded": 4, "errored": 0,
                           "canceled": 0, "expired": 0}, s
    res = check_results(fam, d, bid, ids)
    assert all(text_of(fam, r) is not None for r in res.values())
    assert read(os.path.join(d, "retry.jsonl")) == b""
    assert s["retry"] == {"requests": 0, "reason": None}, s
    w = json.loads(read(os.path.join(d, "wait")))
    assert w["done"] is True and w["state"] == "completed" and w["results"] == "ready", w
    # rmdir forgets it here (nothing at the provider), and it never comes back as a batch
    # made elsewhere: not after the next listings, not after a remount.
    os.rmdir(d)
    root = os.path.join(fam.m.path, fam.remote)
    assert sorted(os.listdir(root)) == [".by-id"] and by_id_names(fam) == []
    if fam.srv is not None:
        n = fam.srv.count("GET", LIST[name])
        wait_for(lambda: fam.srv.count("GET", LIST[name]) >= n + 2, 20, what="two listings")
    fam.m.restart()
    if fam.srv is not None:
        n = fam.srv.count("GET", LIST[name])
        wait_for(lambda: fam.srv.count("GET", LIST[name]) >= n + 1, 20,
                 what="a listing after the remount")
    assert sorted(os.listdir(root)) == [".by-id"] and by_id_names(fam) == []
    assert fam.batches_created() == 1


# --- cancel mid-run --------------------------------------------------------------------------

# Slow enough that a cancel lands with some requests done and others not.
# (The cancel comes after two are done, so a long run costs no time.)
SLOW = {"anthropic": {"processing_s": 8.0, "cancel_drain_s": 0.3},
        "openai": {"processing_s": 8.0}, "azure": {"processing_s": 8.0},
        "vertex": {"running_s": 12.0, "pending_s": 0.2, "cancel_s": 0.3}}


def requests_done(fam, bid):
    """How many requests the provider has finished by now (its own clock)."""
    if fam.name == "mock":
        meta = fam.meta(bid)
        ran = time.time() * 1000 - meta["created_at"]
        return int(meta["n"] * ran / meta["delay_ms"])
    srv = fam.srv
    with srv.lock:
        now = srv.now()
        if fam.name == "anthropic":
            return sum(1 for t in srv.batches[bid].done_at if t <= now)
        if fam.name == "vertex":
            return srv.jobs[bid].finished(now)
        b = srv.batches[bid]
        return sum(1 for i in range(len(b.requests)) if b.ran(i, now))


def ctl(d, word):
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write(word + "\n")


@pytest.mark.parametrize("name", families())
def test_cancel_mid_run_keeps_what_ran(make, name):
    fam = make(name, mock_delay=6) if name == "mock" else make(name, fake_config=SLOW[name])
    ids = [f"k{i}" for i in range(8)]
    body = body_of(fam, ids)
    d = batch_dir(fam)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    bid = read_status(d)["id"]
    wait_for(lambda: requests_done(fam, bid) >= 2, 20, 0.02, what="two requests done")
    if name == "vertex":
        # Vertex writes no results for a cancelled job (a known bug, Google's Claude batch
        # page): a plain cancel is refused with the warning, `cancel!` goes ahead.
        with pytest.raises(OSError) as e:
            ctl(d, "cancel")
        assert e.value.errno == errno.EBUSY
        assert "no results" in read_status(d)["error"]["message"]
        assert fam.srv.count("POST", r":cancel$") == 0
        ctl(d, "cancel!")
    else:
        ctl(d, "cancel")
    assert read_status(d)["state"] in ("canceling", "canceled")
    s = wait_state(d, "canceled", timeout=20)
    c = s["counts"]
    assert c["total"] == 8 and c["processing"] == 0, s
    assert c["canceled"] >= 1, s
    s = wait_for(lambda: (lambda x: x if x["done"] else None)(read_status(d)), 20,
                 what="the batch done")
    if name == "vertex":
        assert s["results"] == "unavailable" and "no results" in s["error"]["message"], s
        assert not os.path.exists(os.path.join(d, "results"))
        assert check_retry(fam, d, body, None) == body.encode()  # nothing succeeded here
        return
    assert c["succeeded"] >= 2 and c["succeeded"] + c["errored"] + c["canceled"] == 8, s
    assert s["results"] == "ready", s
    res = check_results(fam, d, bid, ids)
    ok = [x for x in ids if text_of(fam, res[x]) is not None]
    assert len(ok) == c["succeeded"]
    retry = check_retry(fam, d, body, res)
    assert len(retry.splitlines()) == 8 - c["succeeded"] == s["retry"]["requests"]
    if fam.srv is not None:
        assert fam.srv.count("POST", r"cancel$") == 1


# --- kill -9 during the create, then remount -------------------------------------------------

@pytest.mark.parametrize("name", families(but={
    "mock": "its create is a local file write in the daemon: no request to hold it in"}))
def test_crash_during_create_then_remount_makes_one_batch(make, name):
    # The create reaches the provider, which acts on it only after the daemon was killed
    # (the answer never arrives): after the remount that batch is found and adopted, never
    # made again (test_98_crash has the other steps).
    fam = make(name)
    fam.m.expect_log(r"interrupted|cannot|lost")
    srv = fam.srv
    ids = [f"x{i}" for i in range(3)]
    d = batch_dir(fam)
    srv.add_fault(method="POST", path=CREATE[name], action="delay", seconds=1.5)
    w = Writer(os.path.join(d, "requests.jsonl"), body_of(fam, ids))
    w.start()
    wait_for(lambda: srv.count("POST", CREATE[name]) == 1, 20, what="the create sent")
    fam.m.kill()
    w.join(10)
    assert w.error is not None  # its close() never heard "created"
    wait_for(lambda: fam.batches_created() == 1, 10, what="the create to take effect")
    fam.m.start()
    s = wait_state(d, ("validating", "in_progress", "finalizing", "completed"), timeout=30)
    bid = s["id"]
    assert bid and by_id_names(fam) == [bid]
    s = wait_results(d, timeout=40)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 3, s
    check_results(fam, d, bid, ids)
    assert fam.batches_created() == 1 and srv.count("POST", CREATE[name]) == 1
    assert sorted(os.listdir(os.path.join(fam.m.path, "h"))) == [".by-id",
                                                                 os.path.basename(d)]


# --- the answer to a create lost ------------------------------------------------------------

@pytest.mark.parametrize("name", families(but={
    "mock": "in-process: there is no connection to lose an answer on"}))
def test_lost_create_answer_is_adopted_not_repeated(make, name):
    fam = make(name)
    fam.m.expect_log(r"answer to its creation was lost")
    srv = fam.srv
    srv.add_fault(method="POST", path=CREATE[name], action="drop_after")
    ids = [f"l{i}" for i in range(3)]
    d = batch_dir(fam)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body_of(fam, ids))
    s = read_status(d)
    assert fam.batches_created() == 1
    assert s["id"] and s["state"] in ("validating", "in_progress", "finalizing",
                                      "completed"), s
    s = wait_results(d, timeout=30)
    assert s["state"] == "completed" and s["error"] is None, s
    check_results(fam, d, s["id"], ids)
    assert fam.batches_created() == 1 and srv.count("POST", CREATE[name]) == 1
    assert by_id_names(fam) == [s["id"]]


# --- made elsewhere --------------------------------------------------------------------------

def create_elsewhere(fam, lines):
    if fam.name == "anthropic":
        return fam.srv.create_batch("".join(x + "\n" for x in lines))
    if fam.name == "vertex":
        return fam.srv.create_job(lines)
    return fam.srv.create_batch(lines, endpoint=json.loads(lines[0])["url"])


@pytest.mark.parametrize("name", families(but={
    "mock": "its batches live in this mount's cache: no other client can make one"}))
def test_made_elsewhere_shows_with_status_and_results(make, name):
    fam = make(name)
    ids = [f"e{i}" for i in range(4)]
    bid = create_elsewhere(fam, [fam.line(c, f"elsewhere {c}") for c in ids])
    root = os.path.join(fam.m.path, fam.remote)
    wait_for(lambda: bid in os.listdir(root), 20, what="the batch made elsewhere listed")
    d = os.path.join(root, bid)
    assert os.path.isdir(d) and not os.path.islink(d)
    assert os.readlink(os.path.join(root, ".by-id", bid)) == "../" + bid
    s = read_status(d)
    assert s["name"] == bid and s["id"] == bid and s["provider"] == name, s
    assert read(os.path.join(d, "id")) == (bid + "\n").encode()
    os.listdir(d)  # looking inside asks for its results
    s = wait_results(d, timeout=30)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 4, s
    check_results(fam, d, bid, ids, foreign=True)
    # its input is not known here: no retry.jsonl, and status says why
    assert not os.path.exists(os.path.join(d, "retry.jsonl"))
    assert s["retry"]["requests"] is None and s["retry"]["reason"], s
    assert fam.batches_created() == 1 and fam.srv.count("POST", CREATE[name]) == 0


# --- custom_ids that need escaping ------------------------------------------------------------

ODD_IDS = ["a/b", "..", ".hidden", "with space", "ünïcödé ✓", "%41", "x" * 300, "plain-id_1.2"]
# docs/semantics.md "results": the names every provider must give them (the rule is
# test_80_openai.escape_name; these are spelled out so that rule is checked too).
ODD_NAMES = {"a/b": "a%2Fb", "..": "%2E.", ".hidden": "%2Ehidden", "with space": "with%20space",
             "ünïcödé ✓": "%C3%BCn%C3%AFc%C3%B6d%C3%A9%20%E2%9C%93", "%41": "%2541",
             "plain-id_1.2": "plain-id_1.2"}
# Anthropic (and mock, which takes its format) accept only ^[a-zA-Z0-9_-]{1,64}$
# (https://docs.anthropic.com/en/api/creating-message-batches): none of those names needs
# escaping, and batchfs refuses the others before sending anything.
ANTHROPIC_ONLY = "custom_id must match ^[a-zA-Z0-9_-]{1,64}$: nothing to escape (see below)"


@pytest.mark.parametrize("name", families(but={"mock": ANTHROPIC_ONLY,
                                               "anthropic": ANTHROPIC_ONLY}))
def test_custom_ids_map_to_the_same_file_names(make, name):
    fam = make(name)
    for c, n in ODD_NAMES.items():
        assert escape_name(c) == n
    d = batch_dir(fam)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body_of(fam, ODD_IDS))
    s = wait_results(d, timeout=30)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == len(ODD_IDS), s
    res = check_results(fam, d, s["id"], ODD_IDS)
    assert all(r["custom_id"] == c for c, r in res.items())
    names = os.listdir(os.path.join(d, "results"))
    for c, n in ODD_NAMES.items():
        assert n + ".json" in names and n + ".txt" in os.listdir(os.path.join(d, "text"))
    cut = escape_name("x" * 300)
    assert cut + ".json" in names and len(cut) == 240 and "~" in cut


@pytest.mark.parametrize("name", ["mock", "anthropic"])
def test_custom_ids_anthropic_refuses_are_refused_before_sending(make, name):
    # The complement of the case above for the Anthropic format: an id it would refuse is
    # refused here with its line (nothing sent), and the ids it takes are their own names.
    fam = make(name)
    d = batch_dir(fam)
    for i, bad in enumerate(["a/b", "..", "with space", "ünï", "%41", "x" * 65]):
        with pytest.raises(OSError) as e:
            with open(os.path.join(d, "requests.jsonl"), "w") as f:
                f.write(body_of(fam, ["ok"]) + fam.line(bad) + "\n")
        assert e.value.errno == errno.EINVAL
        s = read_status(d)
        assert s["state"] == "rejected" and s["error"]["line"] == 2, s
    assert fam.batches_created() == 0
    ids = ["-lead", "_under", "A-Z_09", "y" * 64]
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body_of(fam, ids))
    s = wait_results(d, timeout=30)
    check_results(fam, d, s["id"], ids)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(c + ".json" for c in ids)


# --- expiry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", families(but={
    "mock": "the mock has no time limit: every batch ends after mock_delay",
    "azure": "Azure does not expire global batches (\"we do not expire the jobs that take "
             "longer\", learn.microsoft.com/azure/ai-foundry/openai/how-to/batch): its fake "
             "neither",
    "vertex": "Google's Claude batch page documents no time limit, nor what an expired job "
              "(JOB_STATE_EXPIRED) would write: the fake cannot follow a document"}))
def test_expiry_keeps_the_results_of_what_finished(make, name):
    slow = {"anthropic": {"processing_s": 6.0}, "openai": {"processing_s": 6.0,
                                                           "expire_s": 2.0}}
    fam = make(name, fake_config=slow[name])
    ids = [f"t{i}" for i in range(6)]
    body = body_of(fam, ids)
    d = batch_dir(fam)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    bid = read_status(d)["id"]
    if name == "anthropic":
        # Anthropic's 24 h limit, brought forward (the fake's expire()) once two ran.
        wait_for(lambda: requests_done(fam, bid) >= 2, 20, 0.02, what="two requests done")
        fam.srv.expire(bid)
    s = wait_results(d, timeout=30)
    c = s["counts"]
    assert c["expired"] >= 1 and c["succeeded"] >= 1 and c["processing"] == 0, s
    assert c["succeeded"] + c["expired"] == 6, s
    # OpenAI says `expired`; Anthropic's batch `ended` is `expired` only when every request
    # expired (docs/semantics.md "States"), else `completed` with the expired counted.
    assert s["state"] == ("expired" if name == "openai" else "completed"), s
    res = check_results(fam, d, bid, ids)
    assert sum(1 for r in res.values() if text_of(fam, r) is not None) == c["succeeded"]
    assert len(check_retry(fam, d, body, res).splitlines()) == c["expired"]
    if name == "anthropic":
        # ...and a batch of which nothing ran before its limit is `expired`.
        d2 = batch_dir(fam)
        with open(os.path.join(d2, "requests.jsonl"), "w") as f:
            f.write(body_of(fam, ["n0", "n1"]))
        fam.srv.expire(read_status(d2)["id"])
        s = wait_results(d2, timeout=30)
        assert s["state"] == "expired" and s["counts"]["expired"] == 2, s
        check_retry(fam, d2, body_of(fam, ["n0", "n1"]),
                    check_results(fam, d2, s["id"], ["n0", "n1"]))
