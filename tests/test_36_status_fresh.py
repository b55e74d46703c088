"""status is never stale (docs/design.md "Performance notes": each FUSE thread keeps the text it
rendered last, reused only while the store has not changed): read without a pause by several
threads while a batch runs to its end, the next read after `wait` returns is what `wait`
rendered from the store at that moment, byte for byte."""
import json
import os
import subprocess
import threading

from conftest import unique
from bfs import anthropic_line


def test_status_read_without_pause_follows_every_change(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    stop = threading.Event()
    seen = []

    def hammer():
        while not stop.is_set():
            with open(os.path.join(d, "status"), "rb") as f:
                seen.append(json.loads(f.read())["state"])

    readers = [threading.Thread(target=hammer) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        body = "".join(anthropic_line(f"f{i}", f"say {i}") + "\n" for i in range(4))
        body += anthropic_line("bad", "x", model="mock-error") + "\n"
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(body)
        p = subprocess.run(["timeout", "60", "cat", os.path.join(d, "wait")],
                           capture_output=True)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert p.returncode == 0, p.stderr
    with open(os.path.join(d, "status"), "rb") as f:
        now = f.read()
    assert now == p.stdout
    s = json.loads(now)
    assert s["state"] == "completed" and s["results"] == "ready" and s["done"] is True
    assert s["counts"]["succeeded"] == 4 and s["counts"]["errored"] == 1
    assert "draft" in seen and len(set(seen)) >= 2, set(seen)
