"""results.jsonl of a batch of several parts, read as users' tools read it: whole, at odd
offsets and sizes across the parts' boundaries (O_DIRECT, so each read reaches the daemon as
asked, not as the page cache's aligned pages), by dd of several block sizes, by tail -c, and
cold after a remount; always the results/ files of the requests, in request order, byte for
byte (docs/semantics.md "Parts"; the reads are spliced from the parts' data files,
docs/design.md "The store")."""
import os
import subprocess

from conftest import unique
from bfs import anthropic_line, anthropic_requests, wait_results
from fake_anthropic import mount_remote

PER_PART = 300
N = 1500


def mock_parts_mount(mount_factory):
    return mount_factory({"mock": {"provider": "mock", "mock_delay": "1",
                                   "max_requests": str(PER_PART)}})


def submit(d, body):
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)


def results_in_order(d, ids):
    """The results/ files of ids, one after the other: what results.jsonl must be."""
    out = []
    for c in ids:
        with open(os.path.join(d, "results", c + ".json"), "rb") as f:
            out.append(f.read())
    return out


def pread_direct(path, off, size):
    """One read(2) of [off, off + size) that the kernel hands to the daemon as it is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def read_all_direct(path, size):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    out = []
    try:
        while True:
            b = os.read(fd, size)
            if not b:
                return b"".join(out)
            out.append(b)
    finally:
        os.close(fd)


def dd(path, bs, direct):
    flags = ["iflag=direct"] if direct else []
    return subprocess.run(["dd", f"if={path}", f"bs={bs}", "status=none", *flags],
                          capture_output=True, check=True).stdout


def check_reads_around(path, want, offsets, sizes):
    for off in offsets:
        for size in sizes:
            got = pread_direct(path, off, size)
            assert got == want[off:off + size], (off, size, len(got))


def test_results_jsonl_reads_across_parts_are_the_results_in_order(mount_factory):
    m = mock_parts_mount(mount_factory)
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    ids = [f"r{i:04d}" for i in range(N)]
    # texts of different lengths: rows, and so the parts' boundaries, fall anywhere in a page
    submit(d, "".join(anthropic_line(c, "say " + "x" * (i % 37)) + "\n"
                      for i, c in enumerate(ids)))
    s = wait_results(d, timeout=60)
    assert len(s["parts"]) == N // PER_PART and s["counts"]["succeeded"] == N
    rows = results_in_order(d, ids)
    want = b"".join(rows)
    path = os.path.join(d, "results.jsonl")
    # Where each part's stretch starts.
    bounds = [sum(len(r) for r in rows[:k]) for k in range(PER_PART, N, PER_PART)]
    assert len(want) > 3 * 131072 and all(b % 4096 for b in bounds)

    with open(path, "rb") as f:
        assert f.read() == want
    assert os.stat(path).st_size == len(want)
    # Around every boundary: the last byte of a part, the first of the next, and reads
    # that hold both, one or several parts (sizes beyond the end are cut there).
    offsets = sorted({x for b in bounds for x in (b - 2, b - 1, b, b + 1)} |
                     {0, 1, len(want) - 1})
    check_reads_around(path, want, offsets, [1, 2, 3, 4097, 70001, 300000, 2 * len(want)])
    # Reads that start at the beginning of a part and end exactly at the end of another.
    for i, b in enumerate(bounds[:-1]):
        assert pread_direct(path, b, bounds[i + 1] - b) == want[b:bounds[i + 1]]
    assert pread_direct(path, len(want), 10) == b""
    assert pread_direct(path, len(want) + 4096, 10) == b""
    for bs in (1000, 4096, 65543, 131072, 1 << 20):
        assert dd(path, bs, direct=True) == want, bs
    assert read_all_direct(path, 7777) == want
    for bs in (512, 131072):
        assert dd(path, bs, direct=False) == want, bs
    for n in (1, len(rows[-1]), len(want) - bounds[-1] + 1, len(want)):
        got = subprocess.run(["tail", "-c", str(n), path], capture_output=True,
                             check=True).stdout
        assert got == want[-n:], n
    got = subprocess.run(["tail", "-c", f"+{bounds[1] + 1}", path], capture_output=True,
                         check=True).stdout
    assert got == want[bounds[1]:]

    # Cold: a new daemon and a new mount, nothing of the file in any cache of the mount.
    m.restart()
    with open(path, "rb") as f:
        assert f.read() == want
    assert dd(path, 131073, direct=True) == want
    check_reads_around(path, want, offsets[::3], [5, 65537])


def test_results_jsonl_of_parts_answered_out_of_order_reads_at_any_offset(fake_server,
                                                                         mount_factory):
    # The fake answers in its own order: each part's rows lie scattered in its data file, and
    # a read of results.jsonl gathers pieces from all over it.
    srv = fake_server("anthropic", processing_s=0.3)
    m = mount_remote(mount_factory, srv, max_requests=7)
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    n = 60
    submit(d, anthropic_requests(n))
    s = wait_results(d, timeout=60)
    assert len(s["parts"]) == -(-n // 7)
    rows = results_in_order(d, [f"req-{i}" for i in range(n)])
    want = b"".join(rows)
    path = os.path.join(d, "results.jsonl")
    with open(path, "rb") as f:
        assert f.read() == want
    for size in (1, 2, 97, 1000, 4096, 20000):
        check_reads_around(path, want, range(0, len(want), max(size // 3, 53)), [size])
    for bs in (1, 333, 4096):
        assert read_all_direct(path, bs) == want, bs
    m.restart()
    assert dd(path, 4096, direct=True) == want
    with open(path, "rb") as f:
        assert f.read() == want
