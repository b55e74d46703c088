"""Stopping while the network hangs: an unmount or a SIGTERM ends the daemon within 2 s
whatever is in flight (a stalled results download, a stalled upload, a hung token command),
nothing is lost, and key commands that hang fail the mount at their command_timeout without
leaving a process behind."""
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import unique, write_config
from bfs import anthropic_line, anthropic_requests, read_status, wait_results
from fake_anthropic import KEY_ENV, mount_remote
from mount import is_mounted, wait_for

API = "/v1/messages/batches"
CREATE = {"method": "POST", "path": f"^{API}$"}
RESULTS = {"method": "GET", "path": f"^{API}/[^/]+/results$"}
N = 6
STOP_S = 2.0  # the daemon is gone this long after the unmount or the signal


def new_batch(m):
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    return d


def stop_and_time(m, how):
    """Unmounts (or signals) m and returns the seconds until the daemon exited with 0."""
    t0 = time.monotonic()
    if how == "unmount":
        subprocess.run(["fusermount3", "-u", m.path], check=True)
    else:
        m.proc.send_signal(how)
    try:
        rc = m.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"batchfs still runs 10 s after {how}; log:\n{m.read_log()}")
    dt = time.monotonic() - t0
    m.proc = None
    assert rc == 0, f"batchfs exited with {rc}; log:\n{m.read_log()}"
    wait_for(lambda: not is_mounted(m.path), 5, what="the mount to go away")
    return dt


def alive(pattern):
    """Pids of live (not zombie) processes whose command line contains pattern."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if pattern in cmd and state != "Z":
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("how", ["unmount", signal.SIGTERM], ids=["unmount", "sigterm"])
def test_stop_while_a_results_download_is_stalled(fake_server, mount_factory, how):
    srv = fake_server("anthropic", processing_s=0.3, results_chunk=256)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cancelled: batchfs is stopping")
    f = srv.add_fault(RESULTS, action="stall_body", after=300)
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    wait_for(lambda: f.hits == 1 and srv.holding == 1, 15,
             what="the results download to stall")
    dt = stop_and_time(m, how)
    assert dt < STOP_S, f"the daemon took {dt:.2f} s to exit"
    log = m.read_log()
    assert "unmounted; stopping" in log
    assert "cancelled: batchfs is stopping" in log
    wait_for(lambda: srv.holding == 0, 5, what="the stalled connection to be closed")
    # Nothing lost: the next start downloads the results.
    m.start()
    s = wait_results(d)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == N
    assert len(os.listdir(os.path.join(d, "results"))) == N
    assert srv.batches_created == 1


def test_a_stalled_download_leaves_the_remote_working(fake_server, mount_factory):
    # One batch's results stall (the server sends 300 bytes, then nothing, for an hour):
    # another batch of the same remote is still polled and its results still arrive, long
    # before the stalled transfer's 60 s progress deadline could free a single poller.
    srv = fake_server("anthropic", processing_s=0.3, results_chunk=256)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cancelled: batchfs is stopping")
    f = srv.add_fault(RESULTS, action="stall_body", after=300)
    a = new_batch(m)
    with open(os.path.join(a, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    wait_for(lambda: f.hits == 1 and srv.holding == 1, 15,
             what="the first batch's results download to stall")
    b = new_batch(m)
    with open(os.path.join(b, "requests.jsonl"), "w") as fh:
        fh.write(anthropic_requests(N))
    s = wait_results(b, timeout=20)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == N
    assert len(os.listdir(os.path.join(b, "results"))) == N
    assert srv.holding == 1, "the first download is still stalled meanwhile"
    assert read_status(a)["results"] == "downloading"
    assert stop_and_time(m, "unmount") < STOP_S


def test_sigterm_while_a_create_upload_is_stalled(fake_server, mount_factory):
    # The fake reads none of the ~16 MB body, so the upload itself stalls in send(). The
    # create at the close, not one streamed while the file is written (test_23_stream.py).
    srv = fake_server("anthropic", processing_s=0.3)
    section = {"provider": "anthropic", "base_url": srv.url, "api_key_env": KEY_ENV,
               "poll_interval": "0.2", "list_interval": "0.5", "stream_upload": "off"}
    m = mount_factory({"a": section}, env={KEY_ENV: srv.config["api_key"]})
    m.expect_log(r"cancelled: batchfs is stopping")
    f = srv.add_fault(CREATE, action="stall")
    d = new_batch(m)
    text = "x" * (400 * 1024)
    body = "".join(anthropic_line(f"req-{i}", text) + "\n" for i in range(40))
    errors = []

    def writer():
        try:
            with open(os.path.join(d, "requests.jsonl"), "w") as fh:
                fh.write(body)
        except OSError as e:
            errors.append(e)
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    wait_for(lambda: f.hits == 1 and srv.holding == 1, 30, what="the create to stall")
    assert read_status(d)["state"] == "submitting"
    dt = stop_and_time(m, signal.SIGTERM)
    assert dt < STOP_S, f"the daemon took {dt:.2f} s to exit"
    w.join(5)
    assert not w.is_alive() and errors, "close() should have failed"
    assert "unmounted; stopping" in m.read_log()
    assert srv.batches_created == 0
    # The create had left: it may have landed, so it is never sent again on its own.
    # It stays submitting; the next start looks for it (never resends it on a guess).
    m.start()
    s = read_status(d)
    assert s["state"] == "submitting" and s["id"] is None
    wait_for(lambda: srv.count("GET", f"^{API}$") >= 2, 10, what="the next start to look for it")
    s = read_status(d)
    assert s["state"] == "submitting"
    assert srv.count("POST", f"^{API}$") == 1


def test_unmount_while_a_token_command_hangs(fake_server, mount_factory, tmp_path):
    # Vertex runs access_token_command on demand: the first listing hangs in it.
    srv = fake_server("vertex")
    mark = f"sleep 1000.{os.getpid()}1"
    home = tmp_path / "home"
    home.mkdir()
    section = {"provider": "vertex", "project": "p", "location": "us-east5", "bucket": "b",
               "model": "claude-3-5-haiku@20241022", "aiplatform_url": srv.url,
               "storage_url": srv.url, "poll_interval": "0.2", "list_interval": "0.5",
               "access_token_command": mark}
    m = mount_factory({"v": section}, env={"HOME": str(home),
                                          "GOOGLE_APPLICATION_CREDENTIALS": ""})
    wait_for(lambda: alive(mark), 10, what="the token command to run")
    dt = stop_and_time(m, "unmount")
    assert dt < STOP_S, f"the daemon took {dt:.2f} s to exit"
    wait_for(lambda: not alive(mark), 2, what="the token command to be killed")


@pytest.mark.parametrize("provider", ["anthropic", "azure"])
def test_a_hung_key_command_fails_the_mount_at_its_timeout(batchfs_bin, tmp_path, provider):
    mark = f"sleep 1000.{os.getpid()}2"
    if provider == "anthropic":
        section = {"provider": "anthropic", "base_url": "http://127.0.0.1:9",
                   "api_key_command": mark, "command_timeout": "1"}
        key = "api_key_command"
    else:
        section = {"provider": "azure", "endpoint": "http://127.0.0.1:9",
                   "token_command": mark, "command_timeout": "1"}
        key = "token_command"
    cfg = tmp_path / "config"
    write_config(cfg, {"k": section})
    mnt = tmp_path / "m"
    mnt.mkdir()
    t0 = time.monotonic()
    p = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path / 'cache'}",
                        str(mnt)], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    dt = time.monotonic() - t0
    assert p.returncode == 1
    assert f"[k] {key} timed out after 1 s (command_timeout)" in p.stderr, p.stderr
    assert 0.9 < dt < 5, f"took {dt:.2f} s"
    assert not is_mounted(mnt)
    wait_for(lambda: not alive(mark), 2, what="the hung command to be gone")


def test_command_timeout_must_be_positive(batchfs_bin, tmp_path):
    cfg = tmp_path / "config"
    write_config(cfg, {"k": {"provider": "mock", "command_timeout": "soon"}})
    p = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path / 'c'}",
                        str(tmp_path)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "command_timeout must be a positive number of seconds" in p.stderr
