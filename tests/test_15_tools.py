"""A tree that tools can copy (issue 11, items 5 and 6): tar, cp -a, rsync -a and grep -r of
batch directories in every state; cp -r of a job folder; one entry per batch (ids under
<remote>/.by-id/); rmdir / rm -r of an ended batch forgets it here (a tombstone survives
remounts); discover = none."""
import errno
import glob
import json
import os
import subprocess

import pytest

from conftest import unique
from bfs import anthropic_line, anthropic_requests, read_status, wait_results, wait_state
from fake_anthropic import mount_remote
from mount import wait_for

LIST = r"^/v1/messages/batches$"


def run(*cmd, cwd=None):
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)


def ok(*cmd, cwd=None):
    r = run(*cmd, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}"
    return r


def submit(d, body):
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)


def refresh(d):
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("refresh\n")


def body_of(n, prefix):
    return "".join(anthropic_line(f"{prefix}{i}", f"say {i}") + "\n" for i in range(n))


def cached_results_files(m):
    d = os.path.join(m.cache, "results")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def tools_copy(d, dest):
    """tar, cp -a, rsync -a and grep -r of batch directory d, each exit 0; returns the names
    cp -a copied."""
    parent, name = os.path.split(d)
    ok("tar", "-cf", str(dest / f"{name}.tar"), "-C", parent, name)
    ok("cp", "-a", d, str(dest / f"{name}.cp"))
    ok("rsync", "-a", d + "/", str(dest / f"{name}.rsync") + "/")
    ok("grep", "-r", "-e", "refresh", d)
    listing = sorted(os.listdir(dest / f"{name}.cp"))
    assert sorted(os.listdir(dest / f"{name}.rsync")) == listing
    assert sorted(os.listdir(d)) == listing
    t = ok("tar", "-tf", str(dest / f"{name}.tar")).stdout.split()
    assert f"{name}/ctl" in t and f"{name}/status" in t
    return listing


def test_ctl_reads_back_its_words(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    p = os.path.join(d, "ctl")
    st = os.stat(p)
    assert st.st_mode & 0o777 == 0o644
    with open(p) as f:
        text = f.read()
    words = [x.split()[0] for x in text.splitlines()]
    assert words == ["cancel", "cancel!", "refresh"]
    assert st.st_size == len(text.encode())
    # writing stays one word per write: the text read back is not a word
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, text.encode())
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_tar_cp_rsync_grep_of_batch_dirs_in_every_state(fake_server, mount_factory, tmp_path):
    srv = fake_server("anthropic", processing_s=0.3)
    # polls only when asked (refresh): status must not change while a tool reads it
    m = mount_remote(mount_factory, srv, poll_interval=60, list_interval=0.5)
    root = os.path.join(m.path, "a")
    foreign = srv.create_batch(body_of(3, "f"), age_s=5)  # ended before it is listed
    ended = os.path.join(root, unique("ended"))
    submit(ended, body_of(3, "e"))
    with open(os.path.join(ended, "notes.txt"), "w") as f:
        f.write("kept locally\n")
    wait_for(lambda: srv.batch(read_status(ended)["id"])["processing_status"] == "ended", 10,
             what="the batch to end at the fake")
    refresh(ended)
    wait_results(ended)
    fd = os.path.join(root, foreign)
    wait_for(lambda: os.path.isdir(fd), 10, what="the foreign batch")
    wait_results(fd)  # its results are fetched on first access: let that settle first
    srv.set_config(processing_s=600)
    running = os.path.join(root, unique("running"))
    submit(running, body_of(2, "r"))
    assert read_status(running)["state"] == "in_progress"
    draft = os.path.join(root, unique("draft"))
    os.mkdir(draft)
    with open(os.path.join(draft, "requests.jsonl"), "w"):
        pass

    out = tmp_path / "out"
    out.mkdir()
    assert tools_copy(draft, out) == ["ctl", "requests.jsonl", "status"]
    assert tools_copy(running, out) == ["ctl", "id", "requests.jsonl", "status"]
    names = tools_copy(ended, out)
    # retry.jsonl and text/ once ended (wait is never listed, so never copied)
    assert names == ["ctl", "id", "notes.txt", "requests.jsonl", "results", "results.jsonl",
                     "retry.jsonl", "status", "text"]
    assert tools_copy(fd, out) == ["ctl", "id", "results", "results.jsonl", "status", "text"]
    name = os.path.basename(ended)
    for copy in (out / f"{name}.cp", out / f"{name}.rsync"):
        with open(os.path.join(ended, "results.jsonl"), "rb") as a, \
                open(copy / "results.jsonl", "rb") as b:
            assert a.read() == b.read()
        assert (copy / "notes.txt").read_text() == "kept locally\n"
        assert (copy / "ctl").read_text().startswith("cancel")
    # the whole remote too: one copy per batch, the ids as relative links
    ok("cp", "-a", root, str(out / "remote"))
    copied = sorted(os.listdir(out / "remote"))
    assert copied == sorted(os.listdir(root))
    link = out / "remote" / ".by-id" / read_status(ended)["id"]
    assert os.readlink(link) == "../" + name
    assert (link / "notes.txt").read_text() == "kept locally\n"
    assert srv.count("POST", r"/cancel$") == 0


@pytest.mark.parametrize("requests_first", [True, False], ids=["requests-first", "notes-first"])
def test_cp_r_of_a_job_folder_submits_and_keeps_the_notes(mock_mount, tmp_path, requests_first):
    # cp copies in the source directory's order (by inode number, so creation order, on most
    # file systems): with requests.jsonl first the notes arrive after the commit.
    job = tmp_path / unique("job")
    job.mkdir()
    if requests_first:
        (job / "requests.jsonl").write_text(anthropic_requests(3))
    (job / "notes.md").write_text("why this job\n")
    (job / "prompt.txt").write_text("the prompt\n")
    if not requests_first:
        (job / "requests.jsonl").write_text(anthropic_requests(3))
    remote = os.path.join(mock_mount.path, "mock")
    ok("cp", "-r", str(job), remote + "/")
    d = os.path.join(remote, job.name)
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["counts"]["total"] == 3
    with open(os.path.join(d, "notes.md")) as f:
        assert f.read() == "why this job\n"
    with open(os.path.join(d, "prompt.txt")) as f:
        assert f.read() == "the prompt\n"
    # notes copied in after the commit (cp's order is the source directory's): stay local
    with open(os.path.join(d, "later.txt"), "w") as f:
        f.write("after submit\n")
    with open(os.path.join(d, "later.txt"), "a") as f:
        f.write("more\n")
    os.chmod(os.path.join(d, "later.txt"), 0o600)
    with open(os.path.join(d, "later.txt")) as f:
        assert f.read() == "after submit\nmore\n"
    assert os.access(os.path.join(d, "later.txt"), os.W_OK)
    assert os.access(d, os.W_OK)
    assert not os.access(os.path.join(d, "requests.jsonl"), os.W_OK)
    # requests.jsonl itself stays what was submitted
    with pytest.raises(PermissionError):
        open(os.path.join(d, "requests.jsonl"), "w")
    with open(os.path.join(d, "requests.new"), "w") as f:
        f.write(anthropic_requests(1))
    with pytest.raises(PermissionError):
        os.rename(os.path.join(d, "requests.new"), os.path.join(d, "requests.jsonl"))
    wait_state(d, "completed")
    assert read_status(d)["counts"]["total"] == 3


def test_globs_see_each_batch_once_and_by_id_resolves_every_part(fake_server, mount_factory,
                                                                  tmp_path):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=2)
    root = os.path.join(m.path, "a")
    foreign = srv.create_batch(body_of(2, "f"))
    big = os.path.join(root, unique("big"))
    submit(big, body_of(5, "b"))  # three parts
    small = os.path.join(root, unique("small"))
    submit(small, body_of(1, "s"))
    wait_for(lambda: os.path.isdir(os.path.join(root, foreign)), 10, what="the foreign batch")
    for d in (big, small):
        wait_results(d)
    statuses = sorted(glob.glob(os.path.join(root, "*", "status")))
    assert [os.path.basename(os.path.dirname(p)) for p in statuses] == \
        sorted([os.path.basename(big), os.path.basename(small), foreign])
    names = [json.loads(open(p).read())["name"] for p in statuses]
    assert len(names) == len(set(names)) == 3
    assert sorted(os.listdir(root)) == sorted(
        [".by-id", os.path.basename(big), os.path.basename(small), foreign])
    with open(os.path.join(big, "id")) as f:
        big_ids = f.read().split()
    assert len(big_ids) == 3
    by_id = os.path.join(root, ".by-id")
    want = {i: os.path.basename(big) for i in big_ids}
    want[read_status(small)["id"]] = os.path.basename(small)
    want[foreign] = foreign
    assert sorted(os.listdir(by_id)) == sorted(want)
    for pid, name in want.items():
        p = os.path.join(by_id, pid)
        assert os.path.islink(p) and os.readlink(p) == "../" + name
        assert os.path.samefile(p, os.path.join(root, name))
        assert read_status(p)["name"] == name
    # nothing can be made or removed in .by-id
    with pytest.raises(PermissionError):
        os.mkdir(os.path.join(by_id, "x"))
    with pytest.raises(OSError):
        os.unlink(os.path.join(by_id, big_ids[0]))
    # find, ls -la, du walk the tree and see each batch once
    found = ok("find", root, "-name", "status").stdout.split()
    assert sorted(found) == statuses
    ok("ls", "-laR", m.path)
    du = ok("du", "-a", root).stdout
    assert du.count("/status\n") == 3
    # forgetting a batch of three parts takes every part's id out of .by-id
    ok("rm", "-r", big)
    assert sorted(os.listdir(by_id)) == sorted(set(want) - set(big_ids))


def test_rm_r_forgets_ended_batches_and_the_tombstone_survives_a_remount(fake_server,
                                                                          mount_factory):
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv)
    root = os.path.join(m.path, "a")
    foreign = srv.create_batch(body_of(2, "f"))
    mine = os.path.join(root, unique("mine"))
    submit(mine, body_of(3, "m"))
    with open(os.path.join(mine, "notes.txt"), "w") as f:
        f.write("local\n")
    kept = os.path.join(root, unique("kept"))
    submit(kept, body_of(1, "k"))
    mine_id = read_status(mine)["id"]
    fdir = os.path.join(root, foreign)
    wait_for(lambda: os.path.isdir(fdir), 10, what="the foreign batch")
    for d in (mine, kept, fdir):
        wait_results(d)
    before = cached_results_files(m)
    assert len(before) == 3

    ok("rm", "-r", mine)  # unlinks what it lists, results/ first, then rmdir
    os.rmdir(fdir)        # plain rmdir takes it with its virtual files
    # one made elsewhere, removed as soon as it ended: its results download (started by
    # rm's own lookups) may race the forget; nothing of it stays
    fresh = srv.create_batch(body_of(2, "g"))
    gdir = os.path.join(root, fresh)
    wait_for(lambda: os.path.isdir(gdir), 10, what="another foreign batch")
    wait_state(gdir, "completed")
    ok("rm", "-rf", gdir)
    assert sorted(os.listdir(root)) == [".by-id", os.path.basename(kept)]
    assert sorted(os.listdir(os.path.join(root, ".by-id"))) == [read_status(kept)["id"]]
    # a download cut short by the forget leaves its temporary files only until it ends
    wait_for(lambda: len(cached_results_files(m)) == 1, 10, what="only kept's results left")
    # the provider still lists both; later listings do not bring them back
    assert {mine_id, foreign, fresh} <= set(srv.batch_ids())
    lists = srv.count("GET", LIST)
    wait_for(lambda: srv.count("GET", LIST) >= lists + 2, 10, what="two more listings")
    assert sorted(os.listdir(root)) == [".by-id", os.path.basename(kept)]
    # nothing was done at the provider
    assert srv.count("POST", r"/cancel$") == 0 and srv.count("DELETE") == 0

    m.unmount()
    lists = srv.count("GET", LIST)
    m.start()
    wait_for(lambda: srv.count("GET", LIST) >= lists + 2, 10, what="listings after remount")
    assert sorted(os.listdir(root)) == [".by-id", os.path.basename(kept)]
    assert not os.path.exists(os.path.join(root, ".by-id", mine_id))
    assert read_status(kept)["results"] == "ready"
    # a name forgotten is free again for a new draft
    os.mkdir(mine)
    assert read_status(mine)["state"] == "draft"


def test_a_running_batch_cannot_be_removed(mount_factory, tmp_path):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "600"}})
    d = os.path.join(m.path, "mock", unique())
    submit(d, anthropic_requests(2))
    assert read_status(d)["state"] == "in_progress"
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == errno.EBUSY
    for cmd in (["rm", "-r", d], ["rm", "-rf", d]):
        assert run(*cmd).returncode != 0
    assert sorted(os.listdir(d)) == ["ctl", "id", "requests.jsonl", "status"]
    assert read_status(d)["state"] == "in_progress"
    wait_for(lambda: "is still in_progress at the provider" in m.read_log(), 5,
             what="the reason in the log")


def test_forget_with_the_mock_survives_a_remount(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "0.3",
                                "list_interval": "0.3"}})
    root = os.path.join(m.path, "mock")
    d = os.path.join(root, unique())
    submit(d, anthropic_requests(2))
    pid = read_status(d)["id"]
    wait_results(d)
    ok("rm", "-rf", d)
    assert os.listdir(root) == [".by-id"]
    m.unmount()
    m.start()
    # the mock still holds it (its server side lives in the cache); it is not rediscovered
    assert os.path.exists(os.path.join(m.cache, "mock", "mock", pid + ".meta"))
    other = os.path.join(root, unique())
    submit(other, anthropic_requests(1))
    wait_results(other)
    assert sorted(os.listdir(root)) == [".by-id", os.path.basename(other)]


def test_discover_none_never_lists(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.2)
    foreign = srv.create_batch(body_of(2, "f"))
    m = mount_remote(mount_factory, srv, discover="none", list_interval=0.2)
    root = os.path.join(m.path, "a")
    d = os.path.join(root, unique())
    submit(d, body_of(2, "x"))
    wait_results(d)
    assert sorted(os.listdir(root)) == [".by-id", os.path.basename(d)]
    assert not os.path.exists(os.path.join(root, foreign))
    assert srv.count("GET", LIST) == 0


def test_discover_takes_all_or_none(mount_factory, batchfs_bin, tmp_path):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[mock]\nprovider = mock\ndiscover = some\n")
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run(batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path / 'c'}", str(mnt))
    assert r.returncode != 0
    assert "discover must be all or none" in r.stderr
