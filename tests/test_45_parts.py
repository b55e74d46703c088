"""One batch directory of any size: a requests.jsonl over the remote's per-batch limits becomes
several provider batches ("parts"), each submitted once, with one status, one id file, one
results/ and one results.jsonl in request order (docs/semantics.md "Parts")."""
import errno
import json
import os
import subprocess

import pytest

from conftest import unique
from bfs import anthropic_line, read_status, wait_results, wait_state


def mock_remote(**keys):
    section = {"provider": "mock", "mock_delay": "1"}
    section.update({k: str(v) for k, v in keys.items()})
    return {"mock": section}


def new_batch(m, remote="mock"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    return d


def write_requests(d, body):
    """Writes requests.jsonl like `cat > requests.jsonl`; returns close()'s errno (0 = ok)."""
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, body.encode() if isinstance(body, str) else body)
    finally:
        try:
            os.close(fd)
        except OSError as e:
            return e.errno
    return 0


def mock_server_batches(m):
    """The offline provider's own record of the batches it holds: {id: requests bytes}."""
    d = os.path.join(m.cache, "mock", "mock")
    out = {}
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if f.endswith(".meta"):
            bid = f[:-5]
            with open(os.path.join(d, bid + ".jsonl"), "rb") as fh:
                out[bid] = fh.read()
    return out


def lines_of(n, prefix="r", start=0):
    return [anthropic_line(f"{prefix}{i}", f"say {i}") + "\n" for i in range(start, start + n)]


def result_ids(d):
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        return [json.loads(x)["custom_id"] for x in f.read().splitlines()]


def test_a_file_over_max_requests_becomes_as_few_parts_as_fit(mount_factory):
    m = mount_factory(mock_remote(max_requests=1000))
    d = new_batch(m)
    lines = lines_of(2500)
    assert write_requests(d, "".join(lines)) == 0
    s = read_status(d)
    assert [p["part"] for p in s["parts"]] == [1, 2, 3]
    assert [(p["first_line"], p["last_line"]) for p in s["parts"]] == \
        [(1, 1000), (1001, 2000), (2001, 2500)]
    assert [p["counts"]["total"] for p in s["parts"]] == [1000, 1000, 500]
    assert s["counts"]["total"] == 2500
    ids = [p["id"] for p in s["parts"]]
    assert len(set(ids)) == 3 and s["id"] == ids[0]
    with open(os.path.join(d, "id")) as f:
        assert f.read() == "".join(i + "\n" for i in ids)
    # Each part is exactly its lines of the file, once, at the provider.
    held = mock_server_batches(m)
    assert sorted(held) == sorted(ids)
    for i, bid in enumerate(ids):
        assert held[bid] == "".join(lines[1000 * i:1000 * (i + 1)]).encode()
    s = wait_results(d)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 2500
    assert all(p["state"] == "completed" and p["results"] == "ready" for p in s["parts"])
    assert result_ids(d) == [f"r{i}" for i in range(2500)]
    names = os.listdir(os.path.join(d, "results"))
    assert len(names) == 2500
    with open(os.path.join(d, "results", "r1999.json"), "rb") as f:
        r = json.loads(f.read())
    assert r["custom_id"] == "r1999" and r["result"]["message"]["content"][0]["text"] == "say 1999"
    # Every provider id leads back to the directory.
    for bid in ids:
        assert os.path.samefile(os.path.join(m.path, "mock", ".by-id", bid), d)


def test_parts_split_by_bytes_too_and_keep_blank_lines_and_crlf(mount_factory):
    lines = lines_of(10)
    size = len(lines[0].encode())
    # Three requests fit in max_bytes; a blank line and a CRLF line ride along.
    m = mount_factory(mock_remote(max_bytes=3 * size + 8))
    d = new_batch(m)
    body = lines[0] + "\n" + lines[1].replace("\n", "\r\n") + "".join(lines[2:])
    assert write_requests(d, body) == 0
    s = read_status(d)
    assert len(s["parts"]) == 4
    held = mock_server_batches(m)
    assert b"".join(held[p["id"]] for p in s["parts"]) == body.encode()
    for p in s["parts"]:
        assert len(held[p["id"]]) <= 3 * size + 8
    wait_results(d)
    assert result_ids(d) == [f"r{i}" for i in range(10)]


@pytest.mark.slow
def test_100001_mock_requests_split_in_two_parts(mock_mount):
    d = new_batch(mock_mount)
    line = '{"custom_id":"r%d","params":{"model":"m","max_tokens":1,"messages":[]}}\n'
    assert write_requests(d, "".join(line % i for i in range(100001))) == 0
    s = read_status(d)
    assert [p["counts"]["total"] for p in s["parts"]] == [100000, 1]
    assert s["parts"][1]["first_line"] == 100001
    s = wait_results(d, timeout=120)
    assert s["counts"]["succeeded"] == 100001
    ids = result_ids(d)
    assert len(ids) == 100001 and ids[0] == "r0" and ids[-1] == "r100000"


def test_an_invalid_line_anywhere_submits_no_part(mount_factory):
    m = mount_factory(mock_remote(max_requests=1000))
    d = new_batch(m)
    lines = lines_of(2500)
    lines[1699] = '{"custom_id": "r1699", "params": \n'
    assert write_requests(d, "".join(lines)) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 1700
    assert "parts" not in s and s["id"] is None
    assert mock_server_batches(m) == {}
    assert "id" not in os.listdir(d)
    # Fixed, it goes in three parts, once each.
    lines[1699] = anthropic_line("r1699", "say 1699") + "\n"
    assert write_requests(d, "".join(lines)) == 0
    assert len(read_status(d)["parts"]) == 3 and len(mock_server_batches(m)) == 3


def test_a_duplicate_custom_id_across_parts_is_refused(mount_factory):
    m = mount_factory(mock_remote(max_requests=2))
    d = new_batch(m)
    lines = lines_of(5)
    lines[4] = anthropic_line("r0", "again") + "\n"
    assert write_requests(d, "".join(lines)) == errno.EINVAL
    s = read_status(d)
    assert s["error"]["line"] == 5 and "first on line 1" in s["error"]["message"]
    assert mock_server_batches(m) == {}


def test_cancel_cancels_every_running_part(mount_factory):
    m = mount_factory(mock_remote(max_requests=2, mock_delay=30))
    d = new_batch(m)
    assert write_requests(d, "".join(lines_of(5))) == 0
    assert len(read_status(d)["parts"]) == 3
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("cancel\n")
    s = wait_state(d, "canceled")
    assert [p["state"] for p in s["parts"]] == ["canceled"] * 3
    s = wait_results(d)
    assert s["counts"]["canceled"] + s["counts"]["succeeded"] + s["counts"]["errored"] == 5


def test_a_submitted_multi_part_batch_refuses_a_rewrite_and_rmdir(mount_factory):
    m = mount_factory(mock_remote(max_requests=2, mock_delay=600))  # running throughout
    d = new_batch(m)
    assert write_requests(d, "".join(lines_of(3))) == 0
    with pytest.raises(PermissionError):
        open(os.path.join(d, "requests.jsonl"), "w")
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.EACCES)
    assert len(mock_server_batches(m)) == 2


def test_parts_survive_a_remount_and_tools_see_one_tree(mount_factory, tmp_path):
    m = mount_factory(mock_remote(max_requests=4))
    d = new_batch(m)
    assert write_requests(d, "".join(lines_of(10))) == 0
    wait_results(d)
    before = read_status(d)
    m.restart()
    after = read_status(d)
    assert [p["id"] for p in after["parts"]] == [p["id"] for p in before["parts"]]
    assert after["state"] == "completed" and after["results"] == "ready"
    assert result_ids(d) == [f"r{i}" for i in range(10)]
    out = subprocess.run(["find", os.path.join(d, "results"), "-type", "f"], check=True,
                         capture_output=True, text=True).stdout.split()
    assert len(out) == 10
    hits = subprocess.run(["grep", "-rl", "say 7", os.path.join(d, "results")],
                          capture_output=True, text=True).stdout.split()
    assert [os.path.basename(h) for h in hits] == ["r7.json"]


@pytest.mark.parametrize("key, value, why", [
    ("max_requests", "100001", "above the mock limit of 100000"),
    ("max_bytes", "0", "not a positive whole number"),
    ("max_requests", "ten", "not a positive whole number"),
    ("max_bytes", "-5", "not a positive whole number"),
], ids=["above-the-provider", "zero", "not-a-number", "negative"])
def test_a_limit_key_out_of_range_is_refused_at_mount(batchfs_bin, tmp_path, key, value, why):
    cfg = tmp_path / "config"
    cfg.write_text(f"[mock]\nprovider = mock\n{key} = {value}\n")
    mnt = tmp_path / "m"
    mnt.mkdir()
    p = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path}/c", str(mnt)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert key in p.stderr and why in p.stderr


def test_a_batch_of_many_parts_keeps_a_readable_status_and_id(mount_factory):
    m = mount_factory(mock_remote(max_requests=1, mock_delay=0.2))
    d = new_batch(m)
    assert write_requests(d, "".join(lines_of(60))) == 0
    st = os.stat(os.path.join(d, "status"))
    s = read_status(d)
    assert len(s["parts"]) == 60 and st.st_size > 16384
    assert "status" in os.listdir(d)
    with open(os.path.join(d, "id")) as f:
        assert len(f.read().split()) == 60
    s = wait_results(d, timeout=60)
    assert result_ids(d) == [f"r{i}" for i in range(60)]


@pytest.mark.parametrize("tool", ["rsync", "mv", "cat"])
def test_tools_that_rename_or_stream_commit_a_file_in_parts(mount_factory, tmp_path, tool):
    # rsync writes a temp file and renames it onto requests.jsonl (the other commit point);
    # mv from another file system copies then unlinks; `cat > file` streams through a shell.
    m = mount_factory(mock_remote(max_requests=1000))
    d = new_batch(m)
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(lines_of(2500)))
    dst = os.path.join(d, "requests.jsonl")
    if tool == "rsync":
        subprocess.run(["rsync", str(src), dst], check=True)
    elif tool == "mv":
        subprocess.run(["mv", str(src), dst], check=True)
    else:
        subprocess.run(f"cat {src} > {dst}", shell=True, check=True)
    s = read_status(d)
    assert [p["counts"]["total"] for p in s["parts"]] == [1000, 1000, 500]
    assert len(mock_server_batches(m)) == 3
    wait_results(d)
    assert result_ids(d) == [f"r{i}" for i in range(2500)]
