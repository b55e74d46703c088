"""The crash matrix (issue 12): kill -9 the daemon at each step of submission and ingest, for
every provider family, then remount: no result lost, no batch made twice (the fake's batches
are counted), the state right. Each step is reached with the fakes' fault controls
(tests/lib/fake_server.py): a request the fake never acts on ("stall"), one it acts on but
never answers ("hold"), a batch still running, a results body cut off mid-stream ("stall_body"
after a few lines: part of the results already streamed into the cache)."""
import json
import os
import threading

import pytest

from bfs import read_status, wait_state
from hostile import FAMILIES, family
from mount import wait_for

IDS = [f"q{i}" for i in range(6)]

# The requests of each step (path regexes searched in the request path).
UPLOAD = {"openai": r"^/v1/files$", "azure": r"^/openai/files$",
          "vertex": r"^/upload/storage/v1/b/[^/]+/o$"}
CREATE = {"anthropic": r"^/v1/messages/batches$", "openai": r"^/v1/batches$",
          "azure": r"^/openai/batches$", "vertex": r"/batchPredictionJobs$"}
FAST = {"anthropic": {"processing_s": 0.3}, "openai": {"processing_s": 0.3},
        "azure": {"processing_s": 0.3}, "vertex": {}}

STEPS = ["upload-never-done", "create-never-done", "create-done-answer-lost", "running",
         "download-cut"]
CASES = [(f, s) for f in FAMILIES for s in STEPS if not (s == "upload-never-done" and
                                                          f == "anthropic")]


class Writer(threading.Thread):
    """Writes requests.jsonl in a thread: its close() is the commit, which waits for the
    create; a killed daemon fails it."""

    def __init__(self, path, body):
        super().__init__(daemon=True)
        self.path, self.body, self.error = path, body, None

    def run(self):
        try:
            with open(self.path, "w") as f:
                f.write(self.body)
        except OSError as e:
            self.error = e


def results_of(d):
    p = os.path.join(d, "results")
    return sorted(os.listdir(p)) if os.path.isdir(p) else None


@pytest.mark.parametrize("name,step", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_kill_9_at_each_step_then_remount(fake_server, mount_factory, name, step):
    fam = family(name, fake_server, mount_factory, fake_config=FAST[name], reconcile_grace=1)
    srv, m = fam.srv, fam.m
    m.expect_log(r"interrupted|cancelled|cannot")
    d = os.path.join(m.path, "h", "crash")
    os.mkdir(d)
    body = "".join(fam.line(c) + "\n" for c in IDS)
    writer = None
    if step in ("upload-never-done", "create-never-done", "create-done-answer-lost"):
        path = UPLOAD[name] if step == "upload-never-done" else CREATE[name]
        srv.add_fault(method="POST", path=path,
                      action="hold" if step == "create-done-answer-lost" else "stall",
                      seconds=120)
        writer = Writer(os.path.join(d, "requests.jsonl"), body)
        writer.start()
        wait_for(lambda: srv.holding == 1, 20, what=f"the {step} request held")
        made_before = fam.batches_created()
        assert made_before == (1 if step == "create-done-answer-lost" else 0)
    elif step == "running":
        Writer(os.path.join(d, "requests.jsonl"), body).run()
        assert read_status(d)["state"] in ("validating", "in_progress", "finalizing",
                                           "completed")
    else:
        srv.add_fault(method="GET", path=fam.results_path, action="stall_body", after=300,
                      seconds=120)
        Writer(os.path.join(d, "requests.jsonl"), body).run()
        wait_for(lambda: srv.holding == 1, 30, what="the results download held mid-body")
    m.kill()
    if writer:
        writer.join(10)
        assert writer.error is not None  # the commit never told it "done"
    srv.clear_faults()
    m.start()

    if step in ("upload-never-done", "create-never-done"):
        # Nothing was created: after reconcile_grace the batch says so, and can be written
        # again; written again, it makes exactly one batch.
        s = wait_state(d, "failed", timeout=30)
        assert s["id"] is None, s
        assert fam.batches_created() == 0
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(body)
    s = wait_state(d, "completed", timeout=40)
    wait_for(lambda: read_status(d)["results"] not in ("pending", "downloading"), 40,
             what="results settled")
    s = read_status(d)
    assert s["results"] == "ready", s
    assert results_of(d) == sorted(f"{c}.json" for c in IDS)  # none lost, none extra
    assert fam.batches_created() == 1  # none made twice
    with open(os.path.join(d, "id")) as f:
        assert len(f.read().split()) == 1


def test_kill_9_mid_download_past_the_data_files_buffer_then_remount(fake_server,
                                                                       mount_factory):
    """Results of several MiB, one line longer than the data file's 1 MiB write buffer: the
    download is cut after 3 MiB (full buffers on disk in the part's .tmp file, written with
    O_DIRECT where the file system takes it) and the daemon killed. After the remount the part
    is downloaded again and results.jsonl is byte for byte what the provider sent (in request order): nothing of
    the killed attempt is left in it, and no tail of a partly filled buffer is lost."""
    fam = family("anthropic", fake_server, mount_factory, fake_config=FAST["anthropic"])
    srv, m = fam.srv, fam.m
    m.expect_log(r"interrupted|cancelled|cannot")
    d = os.path.join(m.path, "h", "big")
    os.mkdir(d)
    # The fake answers with the prompt's words (up to max_tokens of them, 64000 at most).
    sizes = [150_000] * 20 + [1_500_000] + [150_000] * 7
    ids = [f"b{i}" for i in range(len(sizes))]
    lines = []
    for c, n in zip(ids, sizes):
        words = " ".join(f"{c}w{j:06d}" + "x" * 30 for j in range(n // 40))
        lines.append(json.dumps({"custom_id": c, "params": {
            "model": "claude-test", "max_tokens": 64000,
            "messages": [{"role": "user", "content": words}]}}))
    srv.add_fault(method="GET", path=fam.results_path, action="stall_body", after=3 << 20,
                  seconds=120)
    Writer(os.path.join(d, "requests.jsonl"), "".join(x + "\n" for x in lines)).run()
    wait_for(lambda: srv.holding == 1, 30, what="the results download held mid-body")
    rdir = os.path.join(m.cache, "results")

    def tmp_size():
        tmps = [f for f in os.listdir(rdir) if f.endswith(".tmp")]
        return os.path.getsize(os.path.join(rdir, tmps[0])) if tmps else 0
    # The results come in a random order: the full buffers of the lines wholly received when
    # the body stalls (1 MiB when the long line is the one cut, 2 MiB when it came first).
    with srv.lock:
        (b,) = srv.batches.values()
        body = srv._served(b)
    full = (body.rfind(b"\n", 0, 3 << 20) + 1) // (1 << 20) * (1 << 20)
    assert full >= 1 << 20
    wait_for(lambda: tmp_size() >= full, 30, what=f"{full >> 20} MiB of the data file written")
    m.kill()
    srv.clear_faults()
    m.start()

    wait_for(lambda: read_status(d)["results"] not in ("pending", "downloading"), 60,
             what="results settled")
    assert read_status(d)["results"] == "ready"
    with srv.lock:
        (b,) = srv.batches.values()
        served = srv._served(b).splitlines()
    by_id = {json.loads(x)["custom_id"]: x for x in served}
    assert sorted(by_id) == sorted(ids)
    want = b"".join(by_id[c] + b"\n" for c in ids)  # request order, as the provider sent them
    assert len(want) > 5 << 20 and max(len(x) for x in served) > 1 << 20
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        got = f.read()
    assert len(got) == len(want) and got == want
    assert results_of(d) == sorted(f"{c}.json" for c in ids)
    assert [f for f in os.listdir(rdir) if f.endswith(".tmp")] == []
