"""Commits and ctl actions run on a worker thread per remote, not on the FUSE threads: while
creates hang at the provider, reads, listings and stats of the mount stay fast, every commit
still completes exactly once, and a write racing the commit point cannot change what was
submitted."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import unique
from bfs import anthropic_requests, read_status, wait_results, wait_state
from fake_anthropic import mount_remote
from mount import wait_for

API = "/v1/messages/batches"
CREATE = {"method": "POST", "path": f"^{API}$"}
COMMITS = 8  # as many as libfuse's worker threads: before the worker, all of them were stuck
DELAY_S = 1.0  # each create's hang at the fake (creates of one remote run one at a time)


class Committer(threading.Thread):
    """Writes requests.jsonl and closes it (the commit) in the background; `closing` is set
    once the data is written and close() is under way."""

    def __init__(self, path, body):
        super().__init__(daemon=True)
        self.path = path
        self.body = body.encode()
        self.closing = threading.Event()
        self.error = None
        self.done = False

    def run(self):
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(self.body)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                self.closing.set()
                os.close(fd)
        except OSError as e:
            self.error = e
        self.done = True


class Closer(threading.Thread):
    """close(fd) in the background (a commit that blocks while the create hangs)."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.error = None
        self.done = False

    def run(self):
        try:
            os.close(self.fd)
        except OSError as e:
            self.error = e
        self.done = True


def new_batch(m, remote="a"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    return d


def create_count(srv):
    return srv.count("POST", f"^{API}$")


def hang_commits(m, srv):
    """Starts COMMITS commits whose creates each hang DELAY_S at the fake; returns once every
    writer is in close() and the first create has reached the fake."""
    srv.add_fault(dict(CREATE, action="delay", seconds=DELAY_S, times=COMMITS))
    dirs = [new_batch(m) for _ in range(COMMITS)]
    committers = [Committer(os.path.join(d, "requests.jsonl"),
                            anthropic_requests(3, prefix=f"c{i}"))
                  for i, d in enumerate(dirs)]
    for c in committers:
        c.start()
    wait_for(lambda: all(c.closing.is_set() for c in committers), 10,
             what="every writer to be closing")
    wait_for(lambda: create_count(srv) >= 1, 10, what="the first create to reach the fake")
    return dirs, committers


def pending(committers):
    return sum(1 for c in committers if not c.done)


def finish_commits(srv, dirs, committers):
    """Every hung commit completes, once each, and its batch is at the provider."""
    for c in committers:
        c.join(COMMITS * DELAY_S + 20)
        assert c.done and c.error is None, c.error
    assert create_count(srv) == COMMITS
    assert srv.batches_created == COMMITS
    ids = set()
    for d in dirs:
        s = read_status(d)
        assert s["state"] not in ("draft", "submitting", "failed", "rejected"), s
        ids.add(s["id"])
    assert ids == set(srv.batch_ids())


def cat(path):
    with open(path, "rb") as f:
        return f.read()


# Reads timed in a process of their own: in this one they would queue for the GIL behind the
# fake server's threads, and measure Python rather than the mount.
READER = r"""
import gc, json, os, sys, time
gc.disable()
path, n = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(n):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    times.append(time.perf_counter() - t0)
    assert json.loads(data)["state"] == "draft"
print(json.dumps(times))
"""


def timed_reads(path, n=200):
    """n open + read + close of path, each timed; sorted, in seconds."""
    r = subprocess.run([sys.executable, "-c", READER, path, str(n)], capture_output=True,
                       check=True, timeout=60)
    return sorted(json.loads(r.stdout))


def p99(times):
    return times[int(len(times) * 0.99) - 1]


def test_status_of_an_idle_batch_stays_fast_while_eight_commits_hang(fake_server,
                                                                     mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    idle = os.path.join(new_batch(m), "status")
    timed_reads(idle, 400)  # every FUSE thread opens its cache connection once
    dirs, committers = hang_commits(m, srv)
    # The machine may be shared with other work: up to three rounds of 200. Reads queued
    # behind commits cost about DELAY_S each and fail every round (and the max below).
    # The 1 ms p99 target itself is measured by tests/bench (bench_results.py, "status"); here
    # the bound only tells reads that wait for nobody from reads queued behind a commit.
    rounds = []
    for _ in range(3):
        rounds.append(timed_reads(idle))
        if p99(rounds[-1]) < 0.02:
            break
    # The reads happened while the commits hung (they take COMMITS * DELAY_S in all).
    assert pending(committers) >= COMMITS // 2
    report = ", ".join(f"p99 {p99(t) * 1000:.2f} ms max {t[-1] * 1000:.2f} ms" for t in rounds)
    assert p99(rounds[-1]) < 0.02, report
    assert max(t[-1] for t in rounds) < 0.25, report
    finish_commits(srv, dirs, committers)


def test_ls_and_stat_keep_working_while_eight_commits_hang(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    remote = os.path.join(m.path, "a")
    dirs, committers = hang_commits(m, srv)
    slowest = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        names = os.listdir(remote)
        for d in dirs:
            st = os.stat(os.path.join(d, "requests.jsonl"))
            assert st.st_size == len(anthropic_requests(3, prefix="c0"))
            os.stat(os.path.join(d, "status"))
            assert "status" in os.listdir(d)
        slowest = max(slowest, time.perf_counter() - t0)
        assert {os.path.basename(d) for d in dirs} <= set(names)
    assert pending(committers) >= COMMITS // 2
    assert slowest < 0.2, f"ls and stat of 8 batches took {slowest:.3f} s"
    finish_commits(srv, dirs, committers)


def test_a_write_racing_the_commit_point_cannot_change_what_was_submitted(fake_server,
                                                                         mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    srv.add_fault(dict(CREATE, action="delay", seconds=2))
    d = new_batch(m)
    p = os.path.join(d, "requests.jsonl")
    body = anthropic_requests(3).encode()
    a = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    b = os.open(p, os.O_WRONLY)
    try:
        assert os.write(a, body) == len(body)
        closer = Closer(a)
        closer.start()  # the commit: it blocks while the create hangs
        wait_for(lambda: create_count(srv) == 1, 10, what="the create to reach the fake")
        with pytest.raises(PermissionError):
            os.pwrite(b, b'{"custom_id": "late", "params": {}}\n', len(body))
        with pytest.raises(PermissionError):
            os.pwrite(b, b"X", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(b, 0)
        assert not closer.done  # all of it raced a commit still in flight
        closer.join(15)
        assert closer.done and closer.error is None
    finally:
        os.close(b)
    s = read_status(d)
    assert s["id"] and s["counts"]["total"] == 3
    want = [(x["custom_id"], x["params"]) for x in map(json.loads, body.splitlines())]
    assert srv.requests_of(s["id"]) == want
    assert cat(p) == body
    assert create_count(srv) == 1


def test_ctl_answers_after_its_action_ran_on_the_worker(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=30)
    m = mount_remote(mount_factory, srv)
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    bid = read_status(d)["id"]
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    # The write returned once the cancel had reached the provider and the cache.
    assert srv.batch(bid)["cancel_initiated_at"] is not None
    assert read_status(d)["state"] in ("canceling", "canceled")
    with pytest.raises(OSError):
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("bogus\n")
    wait_state(d, "canceled")


def test_a_single_threaded_mount_serves_reads_while_a_commit_hangs(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, flags=["-s"])
    idle = os.path.join(new_batch(m), "status")
    d = new_batch(m)
    srv.add_fault(dict(CREATE, action="delay", seconds=2))
    c = Committer(os.path.join(d, "requests.jsonl"), anthropic_requests(3))
    c.start()
    wait_for(lambda: create_count(srv) == 1, 10, what="the create to reach the fake")
    t0 = time.perf_counter()
    assert json.loads(cat(idle))["state"] == "draft"
    assert read_status(d)["state"] == "submitting"
    assert os.path.basename(d) in os.listdir(os.path.join(m.path, "a"))
    assert time.perf_counter() - t0 < 0.5 and not c.done
    c.join(15)
    assert c.done and c.error is None
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("refresh\n")
    wait_results(d)
    assert len(os.listdir(os.path.join(d, "results"))) == 3
    assert create_count(srv) == 1
