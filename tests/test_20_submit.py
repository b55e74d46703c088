"""requests.jsonl and its commit point, driven by the tools users use."""
import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import unique
from bfs import anthropic_requests, read_status, wait_results, wait_state


def new_batch(m, remote="mock"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    return d


def mock_batches(m):
    """The batches the offline provider holds (its 'server side')."""
    d = os.path.join(m.cache, "mock", "mock")
    return sorted(f for f in os.listdir(d) if f.endswith(".meta")) if os.path.isdir(d) else []


def test_cp_submits_and_the_batch_lives_to_completion(mock_mount, tmp_path):
    src = tmp_path / "requests.jsonl"
    src.write_text(anthropic_requests(5))
    d = new_batch(mock_mount)
    subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed")
    assert s["id"].startswith("mockbatch_")
    assert s["counts"]["total"] == 5
    with open(os.path.join(d, "id")) as f:
        assert f.read() == s["id"] + "\n"
    link = os.path.join(mock_mount.path, "mock", ".by-id", s["id"])
    assert os.readlink(link) == "../" + os.path.basename(d)
    s = wait_state(d, "completed")
    assert s["provider_state"] == "ended"
    assert s["counts"]["succeeded"] == 5 and s["counts"]["processing"] == 0
    assert s["ended_at"].endswith("Z")
    s = wait_results(d)
    assert s["results"] == "ready"
    assert len(mock_batches(mock_mount)) == 1


def test_requests_jsonl_reads_back_byte_identical_and_is_read_only(mock_mount, tmp_path):
    body = anthropic_requests(3).replace("\n", "\r\n", 1)  # CRLF is accepted as written
    d = new_batch(mock_mount)
    p = os.path.join(d, "requests.jsonl")
    with open(p, "w", newline="") as f:
        f.write(body)
    with open(p, newline="") as f:
        assert f.read() == body
    assert os.stat(p).st_mode & 0o777 == 0o444
    with pytest.raises(PermissionError):
        open(p, "a")
    with pytest.raises(PermissionError):
        open(p, "w")
    with pytest.raises(PermissionError):
        os.truncate(p, 0)
    with pytest.raises(PermissionError):
        os.unlink(p)
    assert not os.access(p, os.W_OK)


def test_touch_of_an_empty_requests_file_stays_a_draft(mock_mount):
    d = new_batch(mock_mount)
    subprocess.run(["touch", os.path.join(d, "requests.jsonl")], check=True)
    assert read_status(d)["state"] == "draft"
    assert "requests.jsonl" in os.listdir(d)
    assert mock_batches(mock_mount) == []
    # ... and can be written afterwards
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(1))
    assert read_status(d)["state"] in ("in_progress", "completed")


def test_echo_append_submits_once(mock_mount):
    d = new_batch(mock_mount)
    line = anthropic_requests(1).strip()
    subprocess.run(["sh", "-c", f"echo '{line}' > {d}/requests.jsonl"], check=True)
    assert read_status(d)["counts"]["total"] == 1
    assert len(mock_batches(mock_mount)) == 1


def test_editor_style_temp_file_then_mv_submits_once(mock_mount, tmp_path):
    d = new_batch(mock_mount)
    tmp = os.path.join(d, ".requests.jsonl.swp")
    with open(tmp, "w") as f:
        f.write("swap data, never submitted")
    part = os.path.join(d, "requests.jsonl.tmp")
    with open(part, "w") as f:
        f.write(anthropic_requests(4))
    assert read_status(d)["state"] == "draft"
    subprocess.run(["mv", part, os.path.join(d, "requests.jsonl")], check=True)
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["counts"]["total"] == 4
    assert len(mock_batches(mock_mount)) == 1
    # the swap file is still there, local, untouched
    with open(tmp) as f:
        assert f.read() == "swap data, never submitted"
    wait_results(d)
    assert len(mock_batches(mock_mount)) == 1


def test_rsync_into_the_batch_directory_submits_once(mock_mount, tmp_path):
    if not shutil.which("rsync"):
        pytest.fail("rsync is missing (apt-get install rsync)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "requests.jsonl").write_text(anthropic_requests(6))
    d = new_batch(mock_mount)
    r = subprocess.run(["rsync", "-rt", f"{src}/", f"{d}/"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["counts"]["total"] == 6
    assert len(mock_batches(mock_mount)) == 1
    assert sorted(os.listdir(d))[:1] != [".requests.jsonl"]  # no rsync temp left behind


def test_writes_after_submission_fail_with_eacces(mock_mount):
    d = new_batch(mock_mount)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(1))
    with pytest.raises(PermissionError):
        os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY)
    # other files stay local and may be made at any time (notes copied in with the job)
    os.close(os.open(os.path.join(d, "new.txt"), os.O_WRONLY | os.O_CREAT))
    assert read_status(d)["counts"]["total"] == 1
    tmp = os.path.join(d, "..", "x")
    assert not os.path.exists(tmp)


def test_rename_onto_a_submitted_requests_file_is_refused(mock_mount):
    d = new_batch(mock_mount)
    with open(os.path.join(d, "notes"), "w") as f:
        f.write(anthropic_requests(1))
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    with pytest.raises(PermissionError):
        os.rename(os.path.join(d, "notes"), os.path.join(d, "requests.jsonl"))
    assert read_status(d)["counts"]["total"] == 2


def test_rmdir_of_a_submitted_batch_is_refused_and_nothing_happens(mount_factory):
    # still running throughout (an ended one would be forgotten: test_15_tools)
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "600"}})
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno in (errno.EBUSY, errno.EACCES, errno.ENOTEMPTY)
    r = subprocess.run(["rm", "-rf", d], capture_output=True)
    assert r.returncode != 0
    assert os.path.isdir(d)
    s = read_status(d)
    assert s["state"] == "in_progress"
    with pytest.raises(PermissionError):
        os.unlink(os.path.join(d, "status"))


def test_cancel_through_ctl(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "30"}})
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(10))
    subprocess.run(["sh", "-c", f"echo cancel > {d}/ctl"], check=True)
    s = read_status(d)
    assert s["state"] in ("canceling", "canceled")
    s = wait_state(d, "canceled")
    assert s["provider_state"] == "ended"
    wait_results(d)
    types = set()
    for name in os.listdir(os.path.join(d, "results")):
        with open(os.path.join(d, "results", name)) as f:
            types.add(json.loads(f.read())["result"]["type"])
    assert "canceled" in types


def test_refresh_through_ctl_updates_status(mount_factory):
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "0.2", "poll_interval": "3600"}})
    d = new_batch(m)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(1))
    before = read_status(d)
    assert before["state"] == "in_progress"
    import time
    time.sleep(0.3)  # let the mock's 0.2 s batch end; polling is off (1 h interval)
    assert read_status(d)["state"] == "in_progress"
    subprocess.run(["sh", "-c", f"echo refresh > {d}/ctl"], check=True)
    assert read_status(d)["state"] == "completed"


def test_a_shell_loop_with_command_substitutions_submits_the_whole_file_once(mock_mount):
    # Each $(...) subshell inherits the loop's descriptor and closes it while the loop is still
    # writing: those closes are not the writer's and must not commit a partial file.
    d = new_batch(mock_mount)
    script = r'''
for q in "What is FUSE?" "Say hello" "Name a prime"; do
    printf '{"custom_id":"q%s","params":{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"%s"}]}}\n' \
        "$(echo "$q" | tr -cd 'a-z')" "$q"
done > requests.jsonl
'''
    subprocess.run(["sh", "-c", script], cwd=d, check=True)
    s = read_status(d)
    assert s["counts"]["total"] == 3, s
    assert len(mock_batches(mock_mount)) == 1
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == \
        ["qameaprime.json", "qayhello.json", "qhatis.json"]


def test_a_descriptor_opened_before_the_commit_cannot_change_the_batch(mock_mount):
    d = new_batch(mock_mount)
    p = os.path.join(d, "requests.jsonl")
    late = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with open(p, "w") as f:
            f.write(anthropic_requests(2))
        assert read_status(d)["counts"]["total"] == 2
        with pytest.raises(PermissionError):
            os.pwrite(late, b"{}\n", 0)
    finally:
        os.close(late)
    with open(p) as f:
        assert f.read() == anthropic_requests(2)
    assert len(mock_batches(mock_mount)) == 1


def test_a_writer_killed_before_closing_leaves_a_draft_that_says_why(mock_mount):
    # cp interrupted: the file holds whole, valid lines, but it is not what the user meant.
    d = new_batch(mock_mount)
    p = os.path.join(d, "requests.jsonl")
    code = ("import os, signal, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
            "os.write(fd, sys.argv[2].encode())\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, p, anthropic_requests(2)])
    assert r.returncode == -9
    s = read_status(d)
    assert s["state"] == "draft" and s["id"] is None
    assert "killed by signal 9" in s["error"]["message"]
    assert mock_batches(mock_mount) == []
    # Written again, by a writer that closes it, it submits.
    with open(p, "w") as f:
        f.write(anthropic_requests(3))
    s = read_status(d)
    assert s["counts"]["total"] == 3 and s["error"] is None
    assert len(mock_batches(mock_mount)) == 1


def test_vim_writes_submits_once_and_removes_its_swap_file(mock_mount, tmp_path):
    # vim keeps .requests.jsonl.swp open and writes it after `:w` has submitted; its `:wq`
    # must end cleanly (exit 0, no "E297: Write error in swap file") with the swap file gone.
    vim = shutil.which("vim.tiny") or shutil.which("vim")
    assert vim, "vim-tiny is missing (contrib/deps.sh installs it)"
    src = tmp_path / "lines.jsonl"
    src.write_text(anthropic_requests(2))
    d = new_batch(mock_mount)
    cmd = f"{vim} -N -u NONE -i NONE -c '0r {src}' -c '$d' -c 'wq' requests.jsonl"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], cwd=d, timeout=30,
                       stdin=subprocess.DEVNULL, capture_output=True)
    assert r.returncode == 0, r.stdout[-500:]
    assert b"E297" not in r.stdout
    assert not [f for f in os.listdir(d) if f.endswith(".swp")]
    with open(os.path.join(d, "requests.jsonl")) as f:
        assert f.read() == anthropic_requests(2)
    assert read_status(d)["counts"]["total"] == 2
    assert len(mock_batches(mock_mount)) == 1


def test_ed_fixes_a_rejected_file_in_place_and_it_submits_once(mock_mount):
    # An editor that rewrites the same file (ed: read it all, then open it O_WRONLY|O_TRUNC,
    # a write-only handle that bypasses the page cache) turns a rejected file into a batch.
    ed = shutil.which("ed")
    assert ed, "ed is missing (contrib/deps.sh installs it)"
    d = new_batch(mock_mount)
    p = os.path.join(d, "requests.jsonl")
    good = anthropic_requests(3).splitlines(keepends=True)
    with pytest.raises(OSError) as e:
        with open(p, "w") as f:
            f.write(good[0] + '{"custom_id": "bad"\n' + "".join(good[1:]))
    assert e.value.errno == errno.EINVAL
    assert read_status(d)["error"]["line"] == 2
    r = subprocess.run([ed, "-s", "requests.jsonl"], cwd=d, input="2d\nw\nq\n", text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    with open(p) as f:
        assert f.read() == "".join(good)
    s = read_status(d)
    assert s["error"] is None and s["counts"]["total"] == 3, s
    assert len(mock_batches(mock_mount)) == 1


@pytest.mark.parametrize("tool", [
    "cp -p {src} requests.jsonl",
    "cp -a {src} requests.jsonl",
    "rsync -a {src} requests.jsonl",
    "dd status=none if={src} of=requests.jsonl",
    "cat {src} > requests.jsonl",
    "tee requests.jsonl < {src} > /dev/null",
    "jq -c . {src} > requests.jsonl",
    "mv {src} requests.jsonl",  # from another file system: mv copies, then unlinks
])
def test_common_tools_submit_once_and_exit_cleanly(mock_mount, tmp_path, tool):
    exe = tool.split()[0]
    if not shutil.which(exe):
        pytest.fail(f"{exe} is missing (contrib/deps.sh installs it)")
    src = tmp_path / "in.jsonl"
    src.write_text(anthropic_requests(3))
    d = new_batch(mock_mount)
    r = subprocess.run(["sh", "-c", tool.format(src=src)], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["counts"]["total"] == 3, s
    with open(os.path.join(d, "requests.jsonl")) as f:
        assert f.read() == anthropic_requests(3)
    assert len(mock_batches(mock_mount)) == 1


def test_install_submits_but_its_chmod_after_close_is_refused(mock_mount, tmp_path):
    # install chmods after it closed the file: by then the batch is submitted and
    # requests.jsonl is read-only, so install reports an error (docs/semantics.md, setattr).
    src = tmp_path / "in.jsonl"
    src.write_text(anthropic_requests(2))
    d = new_batch(mock_mount)
    r = subprocess.run(["install", "-m", "644", str(src), "requests.jsonl"], cwd=d,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert read_status(d)["counts"]["total"] == 2
    assert os.stat(os.path.join(d, "requests.jsonl")).st_mode & 0o777 == 0o444
    assert len(mock_batches(mock_mount)) == 1
