"""requests.jsonl is checked while it is written (docs/design.md, "Validation while the file is
written"): the close of a sequential writer (cp, cat >) has only the upload left. No write
pattern may let what the follower read win over what the file holds at the close: a write out
of sequence, a truncate or a rewrite from the start leaves the check to the close."""
import errno
import os
import re
import subprocess
import threading

from conftest import unique
from bfs import anthropic_line, read_status, wait_results, wait_state


def lines(ids, text="hello"):
    return "".join(anthropic_line(i, text) + "\n" for i in ids)


def checked_as_written(m, name):
    return re.search(rf"batch '{re.escape(name)}': requests.jsonl checked as it was written",
                     m.read_log())


def result_ids(d):
    return sorted(n[:-len(".json")] for n in os.listdir(os.path.join(d, "results")))


def new_batch(m):
    name = unique()
    d = os.path.join(m.path, "mock", name)
    os.mkdir(d)
    return name, d


def close_errno(fd):
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def test_cp_is_checked_as_it_is_written(mock_mount, tmp_path):
    # 4,000 lines (~0.5 MB): more than one read of the follower.
    ids = [f"r{i:05d}" for i in range(4000)]
    src = tmp_path / "requests.jsonl"
    src.write_text(lines(ids, "x" * 40))
    name, d = new_batch(mock_mount)
    subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")], check=True)
    assert checked_as_written(mock_mount, name), mock_mount.read_log()[-2000:]
    wait_results(d)
    assert result_ids(d) == ids


def test_a_bad_line_found_while_written_fails_the_close_with_its_number(mock_mount, tmp_path):
    ids = [f"r{i}" for i in range(3000)]
    body = lines(ids[:1499]) + '{"custom_id": "bad", "params": {}}\n' + lines(ids[1500:])
    src = tmp_path / "requests.jsonl"
    src.write_text(body)
    name, d = new_batch(mock_mount)
    p = subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "Invalid argument" in p.stderr, p.stderr
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 1500, s
    assert checked_as_written(mock_mount, name)


def test_a_bad_line_overwritten_before_the_close_is_not_held_against_the_file(mock_mount):
    # The follower reads the bad line 2 as it lands; the pwrite that fixes it is out of
    # sequence, so the close checks what the file holds.
    good = [anthropic_line(f"a{i}") + "\n" for i in range(5)]
    bad = '{"custom_id":"a1","params":'.ljust(len(good[1]) - 2) + "}\n"
    assert len(bad) == len(good[1])
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, (good[0] + bad + "".join(good[2:])).encode())
    os.pwrite(fd, good[1].encode(), len(good[0]))
    assert close_errno(fd) == 0
    wait_results(d)
    assert result_ids(d) == [f"a{i}" for i in range(5)]


def test_a_good_line_overwritten_with_a_bad_one_is_refused(mock_mount):
    good = [anthropic_line(f"g{i}") + "\n" for i in range(5)]
    bad = '{"custom_id":"g2","params":'.ljust(len(good[2]) - 2) + "}\n"
    assert len(bad) == len(good[2])
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, "".join(good).encode())
    os.pwrite(fd, bad.encode(), len(good[0]) + len(good[1]))
    assert close_errno(fd) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 3, s


def test_a_truncate_cuts_what_the_follower_read(mock_mount):
    # The follower sees a duplicate on line 3; the truncate removes it and the next write
    # lands at the new end: the file at the close is a, b, c.
    a, b, c = (anthropic_line(x) + "\n" for x in ("a", "b", "c"))
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, (a + b + a).encode())
    os.ftruncate(fd, len(a + b))
    os.pwrite(fd, c.encode(), len(a + b))
    assert close_errno(fd) == 0
    wait_results(d)
    assert result_ids(d) == ["a", "b", "c"]


def test_a_rewrite_from_the_start_is_checked_anew(mock_mount):
    # Bad content, then the same descriptor truncates and writes good content from 0: the
    # first follower's verdict goes with it.
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, (lines(["x", "x"]) * 200).encode())
    os.ftruncate(fd, 0)
    os.pwrite(fd, lines(["y1", "y2", "y3"]).encode(), 0)
    assert close_errno(fd) == 0
    wait_results(d)
    assert result_ids(d) == ["y1", "y2", "y3"]
    assert checked_as_written(mock_mount, name)


def test_a_writer_that_pauses_holds_nothing_else_up(mock_mount):
    # Half a file written, the writer idle: other batches are made, written and submitted
    # meanwhile (the follower holds no transaction of the cache while it waits).
    ids = [f"p{i:04d}" for i in range(6000)]
    body = lines(ids).encode()
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, body[:len(body) // 2])
        for _ in range(3):
            _, other = new_batch(mock_mount)
            with open(os.path.join(other, "requests.jsonl"), "w") as f:
                f.write(lines(["o1", "o2"]))
            wait_state(other, ("in_progress", "ended", "completed"))
        os.write(fd, body[len(body) // 2:])
    finally:
        assert close_errno(fd) == 0
    wait_results(d, timeout=60)
    assert result_ids(d) == ids
    assert checked_as_written(mock_mount, name)


def test_a_wrong_line_in_a_file_still_open_holds_nothing_else_up(mock_mount):
    # The follower stops at a wrong line but the writer goes on (dd seek=, a slow editor): the
    # custom_ids it recorded before it are committed, not left in an open transaction that
    # made every other batch's close wait 30 s for the cache and fail ("database is locked").
    ids = [f"w{i:04d}" for i in range(3000)]
    body = (lines(ids[:2000]) + '{"custom_id": "bad", "params": {}}\n').encode()
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, body)
        for _ in range(2):
            _, other = new_batch(mock_mount)
            with open(os.path.join(other, "requests.jsonl"), "w") as f:
                f.write(lines(["o1", "o2"]))
            wait_state(other, ("in_progress", "ended", "completed"))
        os.write(fd, lines(ids[2000:]).encode())
    finally:
        assert close_errno(fd) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 2001, s


def test_a_write_out_of_sequence_during_the_check_holds_nothing_up(mock_mount):
    # `dd seek=` right after a large sequential write: the follower is told to stop while it
    # is still checking what came first. It must not keep the custom_ids it recorded in an
    # open transaction until the close (which waited 30 s for the cache and failed EBUSY).
    for round in range(5):
        ids = [f"s{round}-{i:05d}" for i in range(20000)]
        body = lines(ids).encode()
        name, d = new_batch(mock_mount)
        fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, body)
            os.pwrite(fd, lines(["late"]).encode(), len(body) + 4096)
        finally:
            assert close_errno(fd) == errno.EINVAL
        s = read_status(d)
        assert s["error"]["line"] == len(ids) + 1 and "NUL" in s["error"]["message"], s


def test_many_writers_at_once_each_get_their_own_file(mock_mount, tmp_path):
    # More writers than there are followers (16): the rest are checked at their close.
    n = 20
    dirs, errors = [], []
    for k in range(n):
        src = tmp_path / f"r{k}.jsonl"
        src.write_text(lines([f"w{k}-{i}" for i in range(300)]))
        dirs.append((src, new_batch(mock_mount)[1]))

    def copy(src, d):
        p = subprocess.run(["cp", str(src), os.path.join(d, "requests.jsonl")],
                           capture_output=True, text=True)
        if p.returncode:
            errors.append(p.stderr)
    threads = [threading.Thread(target=copy, args=x) for x in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, (_, d) in enumerate(dirs):
        wait_results(d, timeout=60)
        assert result_ids(d) == sorted(f"w{k}-{i}" for i in range(300))


def test_a_draft_removed_while_written_and_an_unmount_mid_write_leave_nothing(mock_mount):
    # A follower whose draft goes, and one still waiting for its writer at unmount: both end
    # cleanly (the fixture fails the test on any sanitizer or leak report in the log).
    name, d = new_batch(mock_mount)
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, lines([f"q{i}" for i in range(500)]).encode())
    os.unlink(os.path.join(d, "requests.jsonl"))
    os.rmdir(d)
    assert close_errno(fd) == 0
    assert name not in os.listdir(os.path.join(mock_mount.path, "mock"))
    _, d2 = new_batch(mock_mount)
    fd = os.open(os.path.join(d2, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, lines([f"u{i}" for i in range(500)]).encode())
    try:
        subprocess.run(["fusermount3", "-u", "-z", mock_mount.path], check=True)
    finally:
        os.close(fd)
    assert mock_mount.proc.wait(20) == 0, mock_mount.read_log()[-2000:]
    mock_mount.proc = None


def test_a_reader_open_while_a_write_only_writer_writes_sees_every_write(mock_mount):
    # Write-only handles write around the kernel's page cache (docs/design.md, issue 10):
    # a reader opened before the writes, with pages of the file cached, must still read
    # what the file holds, and the file what was written.
    ids = [f"r{i:05d}" for i in range(8000)]
    body = lines(ids, "y" * 400).encode()  # ~3.8 MB: many pages, several writes
    name, d = new_batch(mock_mount)
    p = os.path.join(d, "requests.jsonl")
    w = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    r = os.open(p, os.O_RDONLY)
    try:
        for off in range(0, len(body), 1 << 20):
            assert os.write(w, body[off:off + (1 << 20)]) == len(body[off:off + (1 << 20)])
        assert os.fstat(r).st_size == len(body)
        # A reader through its own handle still reads what was written, from the start.
        assert os.pread(r, 64, 0) == body[:64]
        # A change through the writer of a page the reader has cached: the reader sees it.
        at = body.index(b"y")
        body = body[:at] + b"z" + body[at + 1:]
        assert os.pwrite(w, b"z", at) == 1
        assert os.pread(r, len(body), 0) == body
    finally:
        os.close(r)
    assert close_errno(w) == 0
    wait_results(d)
    assert result_ids(d) == ids
    with open(p, "rb") as f:
        assert f.read() == body
