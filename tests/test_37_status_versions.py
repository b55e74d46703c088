"""status and id have versions (docs/design.md "status: one inode per version"): each text of
a batch's status is its own inode, as if every change were a new file renamed over the old
one. An open file keeps the text it opened; the next open, stat or `cat` sees the change; what
fstat says of an open file is what it reads; every user sees the same."""
import errno
import json
import os
import subprocess
import threading
import traceback

from conftest import NOBODY, unique
from mount import wait_for
from bfs import anthropic_line


def fail_close(d, bad_line):
    """Write a requests.jsonl whose line bad_line is not JSON: close() fails and status names
    that line (a new status text per line number)."""
    body = "".join(anthropic_line(f"ok-{i}") + "\n" for i in range(1, bad_line)) + "{nope\n"
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, body.encode())
    try:
        os.close(fd)
    except OSError as e:
        assert e.errno == errno.EINVAL
        return
    raise AssertionError("an invalid requests.jsonl was accepted")


def read_fd(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    out = b""
    while True:
        k = os.read(fd, 65536)
        if not k:
            return out
        out += k


def snapshot(path):
    """(text, ino and size by path, ino and size by fstat of the fd it was read through)."""
    st = os.stat(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        text = read_fd(fd)
        fst = os.fstat(fd)
    finally:
        os.close(fd)
    return text, st.st_ino, st.st_size, fst.st_ino, fst.st_size


def test_an_open_status_keeps_its_text_and_each_change_is_a_new_inode(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    path = os.path.join(d, "status")
    a, ino_a, size_a, fino, fsize = snapshot(path)
    assert (size_a, fino, fsize) == (len(a), ino_a, len(a))
    assert json.loads(a)["state"] == "draft"
    # nothing changed: the same inode, the same text
    assert snapshot(path)[:3] == (a, ino_a, size_a)

    held = os.open(path, os.O_RDONLY)
    try:
        assert read_fd(held) == a
        versions = {ino_a: a}
        for line in (2, 3, 2):
            fail_close(d, line)
            text, ino, size, fino, fsize = snapshot(path)
            assert f"line {line}" in json.loads(text)["error"]["message"], text
            assert (size, fino, fsize) == (len(text), ino, len(text))
            assert text != a
            # a text seen before may come back under its number; a new one has a new number
            assert versions.setdefault(ino, text) == text
            assert (ino == ino_a) == (text == a)
            # the file opened before the changes still reads, and stats, as it was opened
            assert read_fd(held) == a
            st = os.fstat(held)
            assert (st.st_ino, st.st_size) == (ino_a, len(a))
        assert len(set(versions.values())) == 3
    finally:
        os.close(held)
    # the tools see the same text through the path, with a size that matches it
    cat = subprocess.run(["cat", path], capture_output=True, check=True).stdout
    assert cat == text
    assert os.path.getsize(path) == len(cat)
    assert subprocess.run(["wc", "-c"], stdin=open(path, "rb"), capture_output=True,
                          check=True).stdout.split()[0] == str(len(cat)).encode()


def test_another_user_sees_each_change_too(shared_mount):
    m = shared_mount("allow_other")
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    path = os.path.join(d, "status")

    def as_nobody():
        r = subprocess.run(NOBODY + ["sh", "-c", f"cat '{path}'; stat -c '%i %s' '{path}'"],
                           capture_output=True, check=True)
        text, _, tail = r.stdout.rpartition(b"}\n")
        text += b"}\n"
        ino, size = tail.split()
        return text, int(ino), int(size)

    for line in (2, 5):
        mine = open(path, "rb").read()  # the owner reads first: the pages are shared
        theirs, ino, size = as_nobody()
        assert theirs == mine and size == len(mine) and ino == os.stat(path).st_ino
        fail_close(d, line)
        assert f"line {line}" in json.loads(as_nobody()[0])["error"]["message"]
        assert open(path, "rb").read() == as_nobody()[0]


def test_readers_during_rapid_changes_each_read_one_whole_text(mock_mount):
    """Texts change under 4 readers as fast as close() can fail: every read is one whole
    text, fstat of the fd agrees with it, and once the changes stop every reader reads the
    last one."""
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    path = os.path.join(d, "status")
    stop = threading.Event()
    errors = []
    reads = [0]

    def reader():
        try:
            while not stop.is_set():
                text, ino, size, fino, fsize = snapshot(path)
                s = json.loads(text)  # one whole text, never half of two
                assert s["state"] in ("draft", "submitting", "rejected"), s["state"]
                assert fsize == len(text), (fsize, len(text))
                reads[0] += 1
        except Exception:  # reported by the main thread
            errors.append(traceback.format_exc())
            stop.set()

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for k in range(120):
            if stop.is_set():
                break
            fail_close(d, 2 + k % 7)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert reads[0] > 100
    last = f"line {2 + 119 % 7}"
    for _ in range(3):
        text, ino, size, fino, fsize = snapshot(path)
        assert last in json.loads(text)["error"]["message"] and (size, fino, fsize) == (len(text), ino,
                                                                            len(text))


def test_a_status_too_long_to_push_has_versions_too(mount_factory):
    """A status longer than batchfs pushes into the page cache at open (64 KiB; here 250
    parts), whose pages the kernel reads and whose fstat after a read asks batchfs again,
    still has one inode per text: stat, fstat and read agree, and a file held open keeps its
    text and its size while the parts are cancelled one by one."""
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "600", "max_requests": "1"}})
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    path = os.path.join(d, "status")
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write("".join(anthropic_line(f"r{i}") + "\n" for i in range(250)))

    def running():
        s = json.loads(open(path, "rb").read())
        return s["state"] == "in_progress" and all(p["id"] and p["state"] == "in_progress"
                                                   for p in s["parts"])

    wait_for(running, 60, what="every part created and running")
    # (a poll may change the text at any time: each read is compared with its own fstat)
    text, ino, size, fino, fsize = snapshot(path)
    assert size > 65536 and fsize == len(text)
    held = os.open(path, os.O_RDONLY)
    try:
        text = read_fd(held)
        ino = os.fstat(held).st_ino
        assert json.loads(text)["state"] == "in_progress"
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("cancel\n")
        # the parts are cancelled one by one: each read is one text, which fstat agrees with
        new, _, _, fino2, fsize2 = snapshot(path)
        assert new != text and fino2 != ino and fsize2 == len(new)
        wait_for(lambda: json.loads(open(path, "rb").read())["state"] == "canceled", 60,
                 what="every part cancelled")
        new, ino2, size2, fino2, fsize2 = snapshot(path)
        assert (size2, fino2, fsize2) == (len(new), ino2, len(new)) and ino2 != ino
        assert read_fd(held) == text
        assert (os.fstat(held).st_ino, os.fstat(held).st_size) == (ino, len(text))
    finally:
        os.close(held)


def test_id_has_versions_as_parts_are_created(mount_factory):
    """id grows a line per part as each is created: read without pause meanwhile, each read
    is a prefix of the final file, whole lines only, its fstat size the bytes it read."""
    m = mount_factory({"mock": {"provider": "mock", "mock_delay": "600", "max_requests": "1"}})
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    path = os.path.join(d, "id")
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        try:
            while not stop.is_set():
                try:
                    text, _, _, fino, fsize = snapshot(path)
                except FileNotFoundError:
                    continue  # no part created yet
                assert fsize == len(text), (fsize, len(text))
                seen.append((text, fino))
        except Exception:  # reported by the main thread
            errors.append(traceback.format_exc())

    t = threading.Thread(target=reader)
    t.start()
    try:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write("".join(anthropic_line(f"r{i}") + "\n" for i in range(40)))
    finally:
        stop.set()
        t.join()
    assert not errors, errors[0]
    final, ino, size, fino, fsize = snapshot(path)
    assert len(final.split()) == 40 and (size, fino, fsize) == (len(final), ino, len(final))
    assert seen and all(final.startswith(text) and text.endswith(b"\n") for text, _ in seen)
    # one number per text: the same text always under the same number, a new text a new one
    by_text = {}
    for text, num in seen + [(final, ino)]:
        assert by_text.setdefault(text, num) == num
    assert len(set(by_text.values())) == len(by_text)
    assert len(by_text) >= 3, len(by_text)  # the reader saw the file grow
