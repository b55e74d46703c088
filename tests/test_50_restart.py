"""Restart safety: the cache outlives the daemon; unfinished batches resume."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import unique
from bfs import anthropic_line, anthropic_requests, read_status, wait_results, wait_state
from mount import wait_for


def test_remount_keeps_batches_states_and_results(mock_mount):
    root = os.path.join(mock_mount.path, "mock")
    done = os.path.join(root, unique())
    os.mkdir(done)
    with open(os.path.join(done, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(3))
    wait_results(done)
    draft = os.path.join(root, unique())
    os.mkdir(draft)
    with open(os.path.join(draft, "notes"), "w") as f:
        f.write("kept")
    before = {n: read_status(os.path.join(root, n)) for n in os.listdir(root)
              if n != ".by-id"}
    with open(os.path.join(done, "results.jsonl"), "rb") as f:
        results = f.read()
    listing = sorted(os.listdir(root))

    mock_mount.restart()

    assert sorted(os.listdir(root)) == listing
    for n, s in before.items():
        after = read_status(os.path.join(root, n))
        s.pop("updated_at"), after.pop("updated_at")
        assert after == s
    with open(os.path.join(done, "results.jsonl"), "rb") as f:
        assert f.read() == results
    with open(os.path.join(draft, "notes")) as f:
        assert f.read() == "kept"


def test_kill_9_then_remount_resumes_polling(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "2"}})
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(4))
    s = read_status(d)
    assert s["state"] == "in_progress"
    m.kill(signal.SIGKILL)
    m.start()
    s2 = wait_state(d, "completed")
    assert s2["id"] == s["id"]
    wait_results(d)
    assert len(os.listdir(os.path.join(d, "results"))) == 4
    metas = [f for f in os.listdir(os.path.join(m.cache, "mock", "mock")) if f.endswith(".meta")]
    assert len(metas) == 1


def test_cache_file_is_private(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert os.stat(os.path.join(mock_mount.cache, "cache.db")).st_mode & 0o777 == 0o600
    assert os.stat(mock_mount.cache).st_mode & 0o077 == 0
    json.dumps(read_status(d))


def _ids_of(d):
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        return [json.loads(x)["custom_id"] for x in f.read().splitlines()]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3], ids=["at-once", "50ms", "150ms",
                                                                "300ms"])
def test_kill_9_during_the_ingest_leaves_no_results_or_all(mount_factory, delay):
    # Enough results that the download and its ingest take a while; the daemon dies some
    # time after the download began. Afterwards results/ is either absent or complete, and
    # the next start ends with every result, byte for byte the same as a clean run.
    n = 20000
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "0.5"}})
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(n))
    wait_for(lambda: read_status(d)["results"] in ("downloading", "ready"), 30,
             interval=0.005, what="the download to start")
    time.sleep(delay)  # how far into the download/ingest the crash comes (the variable)
    m.kill()
    m.start()
    s = read_status(d)
    if s["results"] == "ready":
        assert len(os.listdir(os.path.join(d, "results"))) == n
    else:
        assert "results" not in os.listdir(d)
    wait_results(d, timeout=60)
    assert _ids_of(d) == [f"req-{i}" for i in range(n)]
    with open(os.path.join(d, "results", "req-12345.json"), "rb") as f:
        r = json.loads(f.read())
    assert r["custom_id"] == "req-12345" and r["result"]["type"] == "succeeded"
    # No leftovers of the interrupted attempt: one results file for the one part.
    assert [f for f in os.listdir(os.path.join(m.cache, "results"))] == \
        [f"{os.listdir(os.path.join(m.cache, 'results'))[0].split('.')[0]}.jsonl"]


def test_a_full_cache_disk_says_so_keeps_what_was_ready_and_backs_off(mount_factory):
    # The cache on a 6 MB tmpfs: a first small batch's results fit, a second one's do not.
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "1.5",
                                "poll_interval": "0.2"}})
    m.unmount()
    small = m.cache
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", small],
                   check=True)
    try:
        m.start()
        m.expect_log(r"no space left|No space left|disk is full|cannot store")
        root = os.path.join(m.path, "mock")
        first = os.path.join(root, unique())
        os.mkdir(first)
        with open(os.path.join(first, "requests.jsonl"), "w") as f:
            f.write(anthropic_requests(5))
        wait_results(first)
        with open(os.path.join(first, "results.jsonl"), "rb") as f:
            kept = f.read()
        big = os.path.join(root, unique())
        os.mkdir(big)
        with open(os.path.join(big, "requests.jsonl"), "w") as f:
            f.write("".join(anthropic_line(f"b{i}", "x" * 1000) + "\n" for i in range(400)))
        # Something else fills the disk while the batch runs (leaving too little for its
        # results, which are bigger than its requests).
        st = os.statvfs(small)
        with open(os.path.join(small, "filler"), "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 200 * 1024))
        s = wait_for(lambda: (lambda s: s if s["error"] and "no space left on the cache's "
                              "file system" in s["error"]["message"] else None)(
            read_status(big)), 30, what="status to say the disk is full")
        assert s["results"] == "pending" and "results" not in os.listdir(big)
        with open(os.path.join(first, "results.jsonl"), "rb") as f:
            assert f.read() == kept
        # Backing off: far fewer attempts than polls in the next seconds.
        t0 = time.monotonic()
        attempts = lambda: m.read_log().count("no space left on the cache")  # noqa: E731
        a0 = attempts()
        while time.monotonic() - t0 < 3:
            time.sleep(0.1)
        assert attempts() - a0 <= 3  # 0.2 s polls would have tried ~15 times
        m.unmount()
    finally:
        if m.proc:
            m.kill()
        subprocess.run(["umount", "-l", small], check=False)


@pytest.mark.parametrize("damage", ["empty", "garbage", "deleted"])
def test_a_damaged_cache_is_refused_unless_rebuilt(mount_factory, damage):
    # A cache.db emptied, overwritten or deleted while the spool and results are still there
    # would start as a new cache: local batch names and drafts lost without a word. batchfs
    # refuses to start on it; -o rebuild_cache sets it aside and starts over.
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "0.2",
                                "poll_interval": "0.1"}})
    root = os.path.join(m.path, "mock")
    done = os.path.join(root, unique())
    os.mkdir(done)
    with open(os.path.join(done, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    wait_results(done)
    m.unmount()
    db = os.path.join(m.cache, "cache.db")
    for ext in ("-wal", "-shm"):
        if os.path.exists(db + ext):
            os.unlink(db + ext)
    if damage == "empty":
        open(db, "w").close()
    elif damage == "garbage":
        with open(db, "wb") as f:
            f.write(b"not a database, whatever it was\n" * 100)
    else:
        os.unlink(db)
    p = subprocess.run(m.cmd, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, p.stderr
    assert "damaged" in p.stderr and "rebuild_cache" in p.stderr, p.stderr
    assert os.path.getsize(db) if damage == "garbage" else True  # left as it was
    m.extra_opts.append("rebuild_cache")
    m.expect_log(r"was damaged")
    m.start()
    aside = [n for n in os.listdir(m.cache) if n.startswith("cache.db.damaged-")]
    assert aside or damage == "deleted", os.listdir(m.cache)
    assert os.path.isdir(root)
    assert "damaged" in m.read_log()
