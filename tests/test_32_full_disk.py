"""A full spool disk while a draft is written: the partial file is never submitted, `rm`
frees space, and a second `cp` works once there is room."""
import contextlib
import errno
import os
import subprocess

import pytest

from conftest import unique
from bfs import anthropic_line, read_status


@contextlib.contextmanager
def small_disk(mount_factory, size="4m", spool_only=False):
    """A mock mount whose cache (or only its spool, where drafts are written) is a tmpfs of
    `size`. Yields the mount and the tmpfs' path."""
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "600"}})
    m.unmount()
    disk = os.path.join(m.cache, "spool") if spool_only else m.cache
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", disk],
                   check=True)
    try:
        m.start()
        yield m, disk
        m.unmount()
    finally:
        if m.proc:
            m.kill()
        subprocess.run(["umount", "-l", disk], check=False)


def fill(path, leave):
    """Fills path's file system but `leave` bytes, with the file path/filler."""
    st = os.statvfs(path)
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def requests(n):
    return "".join(anthropic_line(f"r{i}", "x" * 900) + "\n" for i in range(n)).encode()


def test_a_write_that_fails_for_space_never_submits(mount_factory, tmp_path):
    src = tmp_path / "requests.jsonl"
    src.write_bytes(requests(3000))  # about 2.8 MB
    with small_disk(mount_factory, spool_only=True) as (m, disk):
        m.expect_log(r"No space left|not submitted")
        fill(disk, 1024 * 1024)
        d = os.path.join(m.path, "mock", unique())
        os.mkdir(d)
        r = subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "No space left on device" in r.stderr, r.stderr
        s = read_status(d)
        assert s["state"] == "draft" and s["id"] is None, s
        assert "not submitted: a write to it failed (No space left on device)" in \
            s["error"]["message"], s
        assert not os.listdir(os.path.join(m.cache, "mock", "mock"))  # no batch was made
        # Space freed: the same cp now works and submits every request.
        os.unlink(os.path.join(disk, "filler"))
        subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)
        s = read_status(d)
        assert s["state"] == "in_progress" and s["counts"]["total"] == 3000, s
        assert s["error"] is None, s


def test_close_reports_the_failed_write(mount_factory):
    with small_disk(mount_factory, spool_only=True) as (m, disk):
        m.expect_log(r"No space left|not submitted")
        fill(disk, 256 * 1024)
        d = os.path.join(m.path, "mock", unique())
        os.mkdir(d)
        fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT, 0o644)
        data = requests(1000)
        with pytest.raises(OSError) as e:
            while data:
                data = data[os.write(fd, data):]
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            os.close(fd)
        assert e.value.errno == errno.ENOSPC
        assert read_status(d)["state"] == "draft"


def test_rm_of_requests_in_a_draft_frees_space_on_a_full_disk(mount_factory):
    # The whole cache is full: SQLite too has no room for the journal of the removal.
    with small_disk(mount_factory) as (m, disk):
        m.expect_log(r"No space left|not submitted|disk is full")
        fill(disk, 1024 * 1024)
        d = os.path.join(m.path, "mock", unique())
        os.mkdir(d)
        with pytest.raises(OSError):
            with open(os.path.join(d, "requests.jsonl"), "wb") as f:
                f.write(requests(2000))
        assert os.statvfs(disk).f_bavail < 8  # full: the spool file took what was left
        os.unlink(os.path.join(d, "requests.jsonl"))
        assert "requests.jsonl" not in os.listdir(d)
        st = os.statvfs(disk)
        assert st.f_bavail * st.f_frsize >= 900 * 1024
        assert read_status(d)["state"] == "draft"
