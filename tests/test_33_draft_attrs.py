"""Attribute changes of draft files: truncate starts a new draft, chown to another owner is
refused (EPERM, as for a file one may not chown)."""
import errno
import os
import subprocess

import pytest

from conftest import unique
from bfs import read_status


def test_truncate_to_zero_clears_an_old_rejection(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    p = os.path.join(d, "requests.jsonl")
    with pytest.raises(OSError) as e:
        with open(p, "w") as f:
            f.write("garbage\n")
    assert e.value.errno == errno.EINVAL
    assert read_status(d)["state"] == "rejected"
    subprocess.run(["truncate", "-s", "0", p], check=True)
    s = read_status(d)
    assert s["state"] == "draft" and s["error"] is None, s
    assert os.path.getsize(p) == 0


def test_chown_of_a_draft_file_to_another_owner_is_refused(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    p = os.path.join(d, "notes")
    with open(p, "w") as f:
        f.write("x")
    before = os.stat(p)
    with pytest.raises(OSError) as e:
        os.chown(p, before.st_uid + 4242, -1)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.chown(p, -1, before.st_gid + 4242)
    assert e.value.errno == errno.EPERM
    r = subprocess.run(["chown", "nobody", p], capture_output=True, text=True)
    assert r.returncode == 1 and "not permitted" in r.stderr, r.stderr
    # To the owner it already has: fine (cp -p, rsync -o as that user).
    os.chown(p, before.st_uid, before.st_gid)
    after = os.stat(p)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
