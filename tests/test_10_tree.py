"""The tree: remotes, batch directories, names, drafts and their removal."""
import errno
import json
import os
import stat

import pytest

from conftest import unique
from bfs import read_status


def test_root_lists_the_remotes(mount_factory):
    m = mount_factory({"one": {"provider": "mock"}, "two": {"provider": "mock"}})
    assert sorted(os.listdir(m.path)) == ["one", "two"]
    assert stat.S_ISDIR(os.stat(os.path.join(m.path, "one")).st_mode)


def test_mkdir_makes_a_draft_with_status_and_ctl(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert sorted(os.listdir(d)) == ["ctl", "status"]
    s = read_status(d)
    assert s["state"] == "draft"
    assert s["name"] == os.path.basename(d)
    assert s["remote"] == "mock" and s["provider"] == "mock"
    assert s["id"] is None and s["error"] is None
    assert s["counts"]["total"] == 0
    assert oct(os.stat(os.path.join(d, "ctl")).st_mode & 0o777) == "0o644"
    assert oct(os.stat(os.path.join(d, "status")).st_mode & 0o777) == "0o444"


def test_status_is_one_json_object_and_a_newline(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "status"), "rb") as f:
        data = f.read()
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    json.loads(data)


@pytest.mark.parametrize("name", ["-lead", ".hidden", "a b", "a:b", "é",
                                  "a" * 129, "_under"])
def test_bad_batch_names_are_refused_with_einval(mock_mount, name):
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(mock_mount.path, "mock", name))
    assert e.value.errno in (errno.EINVAL, errno.ENAMETOOLONG)
    assert name not in os.listdir(os.path.join(mock_mount.path, "mock"))


@pytest.mark.parametrize("name", ["a", "A1", "x.y_z-9", "a" * 128, "9lives"])
def test_good_batch_names_are_accepted(mock_mount, name):
    os.mkdir(os.path.join(mock_mount.path, "mock", name))
    assert name in os.listdir(os.path.join(mock_mount.path, "mock"))


def test_mkdir_twice_is_eexist(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with pytest.raises(FileExistsError):
        os.mkdir(d)


def test_mkdir_outside_a_remote_is_refused(mock_mount):
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(mock_mount.path, "newremote"))
    assert e.value.errno in (errno.EACCES, errno.EPERM)
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d, "sub"))
    assert e.value.errno in (errno.EACCES, errno.EPERM)


def test_rmdir_of_a_draft_removes_it(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("scratch")
    os.rmdir(d)
    assert os.path.basename(d) not in os.listdir(os.path.join(mock_mount.path, "mock"))
    os.mkdir(d)  # the name is free again, and the new draft is empty
    assert sorted(os.listdir(d)) == ["ctl", "status"]


def test_rm_r_of_a_draft_removes_it(mock_mount):
    import subprocess
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    open(os.path.join(d, "requests.jsonl"), "w").close()
    subprocess.run(["rm", "-rf", d], check=True)
    assert not os.path.exists(d)


def test_any_file_can_live_in_a_draft(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    p = os.path.join(d, "notes.part")
    with open(p, "w") as f:
        f.write("hello")
    os.rename(p, os.path.join(d, "notes.txt"))
    with open(os.path.join(d, "notes.txt")) as f:
        assert f.read() == "hello"
    assert read_status(d)["state"] == "draft"
    os.unlink(os.path.join(d, "notes.txt"))
    assert sorted(os.listdir(d)) == ["ctl", "status"]


def test_status_cannot_be_written(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with pytest.raises(PermissionError):
        open(os.path.join(d, "status"), "w")


def test_unknown_ctl_word_is_einval(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    fd = os.open(os.path.join(d, "ctl"), os.O_WRONLY | os.O_TRUNC)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"explode\n")
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_cancel_of_a_draft_is_einval(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    fd = os.open(os.path.join(d, "ctl"), os.O_WRONLY | os.O_TRUNC)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"cancel\n")
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_reserved_names_cannot_be_created_or_renamed_onto(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    with pytest.raises(OSError):
        os.open(os.path.join(d, "results.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with open(os.path.join(d, "x"), "w") as f:
        f.write("x")
    with pytest.raises(PermissionError):
        os.rename(os.path.join(d, "x"), os.path.join(d, "status"))
