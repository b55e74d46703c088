"""The Anthropic create streamed while requests.jsonl is written (docs/design.md, "The create
streamed as the file is written"): once some MiB are checked, the create's body starts going
to the server, its end held back until the close has decided to submit. Whatever happens
before that decision (a write out of sequence, a wrong line, a crash, a server that refuses
the stream), the server holds an incomplete body and makes nothing; the close submits the
file's final content exactly once, or refuses it."""
import errno
import json
import os

from conftest import unique
from bfs import anthropic_line, read_status, wait_results
from fake_anthropic import mount_remote
from mount import wait_for

API = "/v1/messages/batches"
TEXT = "x" * 1000  # ~1.1 KB lines: 10,000 requests are ~11 MB, past the 8 MiB start
N = 10000
PIECE = 1 << 20


def body_of(ids, text=TEXT):
    return "".join(anthropic_line(c, text) + "\n" for c in ids).encode()


def new_batch(m):
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    return d


def open_requests(d):
    return os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def write_pieces(fd, data):
    for i in range(0, len(data), PIECE):
        os.write(fd, data[i:i + PIECE])


def close_errno(fd):
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def creates(srv):
    with srv.lock:
        return [r for r in srv.requests if r["method"] == "POST" and r["path"] == API]


def streaming(srv):
    """The create's body is arriving while the file is still open."""
    wait_for(lambda: srv.create_bytes > 0 and creates(srv), 20,
             what="the create's body arriving before the close")


def abandoned(srv):
    """The streamed create's body never ended: the fake saw its client go, made nothing."""
    try:
        wait_for(lambda: creates(srv)[0]["status"] == "client-gone", 10,
                 what="the streamed create abandoned")
    except AssertionError:
        raise AssertionError(f"creates: {[r['status'] for r in creates(srv)]}, "
                             f"{srv.create_bytes} bytes") from None


def batch_requests(srv):
    with srv.lock:
        bs = list(srv.batches.values())
    assert len(bs) == 1, [b.id for b in bs]
    return [(cid, params) for cid, params in bs[0].requests]


def expected(ids, text=TEXT):
    return [(c, json.loads(anthropic_line(c, text))["params"]) for c in ids]


def result_count(d):
    return len(os.listdir(os.path.join(d, "results")))


def test_the_create_streams_while_the_file_is_written(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv)
    ids = [f"s{i:05d}" for i in range(N)]
    data = body_of(ids)
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, data[:10 << 20])
        streaming(srv)  # the file is open: only a streamed create can be sending
        assert srv.batches_created == 0  # its end is held back
        write_pieces(fd, data[10 << 20:])
    finally:
        assert close_errno(fd) == 0
    assert srv.batches_created == 1 and len(creates(srv)) == 1
    assert batch_requests(srv) == expected(ids)
    s = wait_results(d, timeout=60)
    assert s["id"] and result_count(d) == N
    with open(os.path.join(d, "results", ids[-1] + ".json")) as f:
        assert json.loads(f.read())["custom_id"] == ids[-1]


def test_a_write_out_of_sequence_aborts_the_stream(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv)
    ids = [f"o{i:05d}" for i in range(N)]
    data = body_of(ids)
    first = body_of(ids[:1])
    fixed = body_of(ids[:1], "y" * len(TEXT))
    assert len(fixed) == len(first)
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, data[:10 << 20])
        streaming(srv)
        os.pwrite(fd, fixed, 0)  # what was streamed of line 1 is no longer the file
        write_pieces(fd, data[10 << 20:])
    finally:
        assert close_errno(fd) == 0
    # The stream's body never ended: the fake made nothing of it; the close made one batch
    # of the file as it is now.
    abandoned(srv)
    assert srv.batches_created == 1 and len(creates(srv)) == 2
    assert batch_requests(srv) == expected(ids[:1], "y" * len(TEXT)) + expected(ids[1:])
    wait_results(d, timeout=60)
    assert result_count(d) == N


def test_a_truncate_aborts_the_stream(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv)
    ids = [f"t{i:05d}" for i in range(N)]
    data = body_of(ids)
    d = new_batch(m)
    fd = open_requests(d)
    keep = len(body_of(ids[:100]))
    try:
        write_pieces(fd, data[:10 << 20])
        streaming(srv)
        os.ftruncate(fd, keep)
        os.pwrite(fd, body_of(["t-last"]), keep)
    finally:
        assert close_errno(fd) == 0
    abandoned(srv)
    assert srv.batches_created == 1 and len(creates(srv)) == 2
    assert batch_requests(srv) == expected(ids[:100]) + expected(["t-last"])


def test_a_wrong_line_after_the_stream_began_makes_nothing(fake_server, mount_factory):
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv)
    ids = [f"w{i:05d}" for i in range(N)]
    head = body_of(ids[:9500])
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, head)
        streaming(srv)
        os.write(fd, b'{"custom_id": "bad", "params": {}}\n')
        write_pieces(fd, body_of(ids[9500:]))
    finally:
        assert close_errno(fd) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 9501, s
    abandoned(srv)
    assert srv.batches_created == 0 and len(creates(srv)) == 1


def test_kill_9_mid_stream_makes_nothing_and_the_draft_stays_one(fake_server, mount_factory):
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv, reconcile_grace=1)
    ids = [f"k{i:05d}" for i in range(N)]
    d = new_batch(m)
    name = os.path.basename(d)
    fd = open_requests(d)
    write_pieces(fd, body_of(ids)[:10 << 20])
    streaming(srv)
    m.kill()
    close_errno(fd)  # the daemon is gone: whatever the close says
    wait_for(lambda: creates(srv)[0]["status"] == "client-gone", 10,
             what="the fake seeing the incomplete body")
    assert srv.batches_created == 0
    m.start()
    d = os.path.join(m.path, "a", name)
    s = read_status(d)
    assert s["state"] == "draft" and s["id"] is None, s
    assert srv.batches_created == 0 and len(creates(srv)) == 1
    # The draft is still the user's to finish: written again, it is submitted once.
    with open(os.path.join(d, "requests.jsonl"), "wb") as f:
        f.write(body_of(ids[:50]))
    wait_results(d, timeout=60)
    assert srv.batches_created == 1 and batch_requests(srv) == expected(ids[:50])


def test_a_server_refusing_the_stream_early_falls_back_to_the_create_at_close(
        fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv)
    srv.add_fault(method="POST", path=API + "$", action="early", after=1 << 20, status=500)
    ids = [f"f{i:05d}" for i in range(N)]
    data = body_of(ids)
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, data[:10 << 20])
        wait_for(lambda: creates(srv) and creates(srv)[0]["status"] == 500, 20,
                 what="the streamed create refused")
        write_pieces(fd, data[10 << 20:])
    finally:
        assert close_errno(fd) == 0
    assert srv.batches_created == 1 and len(creates(srv)) == 2
    assert batch_requests(srv) == expected(ids)
    wait_results(d, timeout=60)
    assert result_count(d) == N


def test_stream_upload_off_sends_the_create_at_the_close(fake_server, mount_factory):
    # A proxy that buffers or refuses chunked bodies: the remote's key turns streaming off.
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv, stream_upload="off")
    ids = [f"n{i:05d}" for i in range(N)]
    data = body_of(ids)
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, data)
        assert not creates(srv) and srv.create_bytes == 0  # 11 MB written: nothing sent
    finally:
        assert close_errno(fd) == 0
    assert srv.batches_created == 1 and len(creates(srv)) == 1
    assert batch_requests(srv) == expected(ids)


def test_a_file_of_two_parts_streams_the_first_and_sends_the_second_at_close(
        fake_server, mount_factory):
    # 8,000 requests per batch: the first part (~8.7 MB) streams, held at its end while
    # the file goes on; the second is sent at the close as before.
    srv = fake_server("anthropic", processing_s=0.5)
    m = mount_remote(mount_factory, srv, max_requests=8000)
    ids = [f"p{i:05d}" for i in range(N)]
    data = body_of(ids)
    d = new_batch(m)
    fd = open_requests(d)
    try:
        write_pieces(fd, data[:10 << 20])
        streaming(srv)
        write_pieces(fd, data[10 << 20:])
    finally:
        assert close_errno(fd) == 0
    assert srv.batches_created == 2 and len(creates(srv)) == 2
    with srv.lock:
        made = [[cid for cid, _ in b.requests] for b in srv.batches.values()]
    assert made == [ids[:8000], ids[8000:]]
    wait_results(d, timeout=60)
    assert result_count(d) == N
