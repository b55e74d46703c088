"""Restart safety: the cache outlives the daemon; unfinished batches resume."""
import json
import os
import signal

from conftest import unique
from bfs import anthropic_requests, read_status, wait_results, wait_state


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
              if os.path.isdir(os.path.join(root, n)) and not os.path.islink(os.path.join(root, n))}
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
