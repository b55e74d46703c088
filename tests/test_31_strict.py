"""The strict line check: input cJSON would accept but a provider reads differently (or
refuses late) fails at close() with EINVAL, naming the line and the byte column, and nothing
is sent. Through the mock and through the fake Anthropic API."""
import errno
import os

import pytest

from conftest import unique
from bfs import anthropic_line, read_status
from fake_anthropic import mount_remote

GOOD = anthropic_line("ok-1").encode()
GOOD2 = anthropic_line("ok-2").encode()
PARAMS = b'"params":{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'


def content(text):
    return b'{"custom_id":"c1",' + PARAMS.replace(b'"hi"', b'"' + text + b'"') + b"}"


# name: (bytes written, or a function of the open fd; line; column or None; words)
CASES = {
    "text_after_the_object": (GOOD + b"\n" + GOOD2 + b" trailing\n", 2, len(GOOD2) + 2,
                              "text after the JSON value"),
    "two_objects_on_one_line": (GOOD + GOOD2 + b"\n", 1, len(GOOD) + 1,
                                "text after the JSON value"),
    "nul_after_the_object": (GOOD + b"\0\n", 1, len(GOOD) + 1, "NUL byte"),
    "nul_inside_a_string": (content(b"a\0b") + b"\n", 1, None, "NUL byte"),
    "utf8_bom": (b"\xef\xbb\xbf" + GOOD + b"\n", 1, 1, "byte order mark"),
    "lone_cr_line_ends": (GOOD + b"\r" + GOOD2 + b"\r", 1, len(GOOD) + 1, "lone CR"),
    "invalid_utf8": (GOOD + b"\n" + content(b"\xff\xfe") + b"\n", 2, None, "invalid UTF-8"),
    "overlong_utf8": (content(b"\xc0\xaf") + b"\n", 1, None, "overlong"),
    "utf8_surrogate": (content(b"\xed\xa0\x80") + b"\n", 1, None, "surrogate"),
    "lone_surrogate_escape": (content(b"\\ud800") + b"\n", 1, None, "surrogate"),
    "custom_id_with_escaped_nul": (b'{"custom_id":"a\\u0000b",' + PARAMS + b"}\n", 1, 14,
                                   "\\u0000 in custom_id"),
    "duplicate_custom_id_key": (b'{"custom_id":"a","custom_id":"b",' + PARAMS + b"}\n", 1, 18,
                                "duplicate key"),
    "duplicate_params_key": (b'{"custom_id":"a",' + PARAMS + b"," + PARAMS + b"}\n", 1,
                             len(PARAMS) + 19, "duplicate key"),
    "duplicate_key_in_params": (b'{"custom_id":"a","params":{"model":"m","model":"x",'
                                b'"max_tokens":1,"messages":[]}}\n', 1, 40, "duplicate key"),
    "max_tokens_1e300": (b'{"custom_id":"a","params":{"model":"m","max_tokens":1e300,'
                         b'"messages":[]}}\n', 1, None, "max_tokens"),
}


def dd_seek_padding(fd):
    # `dd seek=`: data written past the end leaves a hole that reads as NULs.
    os.write(fd, GOOD + b"\n")
    os.pwrite(fd, GOOD2 + b"\n", 4096)


def growing_ftruncate(fd):
    os.write(fd, GOOD + b"\n")
    os.ftruncate(fd, len(GOOD) + 1 + 64)


CASES["nul_padding_from_dd_seek"] = (dd_seek_padding, 2, 1, "NUL byte")
CASES["nul_padding_from_ftruncate"] = (growing_ftruncate, 2, 1, "NUL byte")


def write_requests(d, body):
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if callable(body):
            body(fd)
        else:
            os.write(fd, body)
    except OSError:
        os.close(fd)
        raise
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


@pytest.fixture(params=["mock", "anthropic"])
def target(request, mount_factory, fake_server):
    """(batch root, function telling that nothing was sent)."""
    if request.param == "mock":
        m = mount_factory()
        spool = os.path.join(m.cache, "mock", "mock")
        return os.path.join(m.path, "mock"), lambda: not os.listdir(spool)
    srv = fake_server("anthropic")
    m = mount_remote(mount_factory, srv)
    return os.path.join(m.path, "a"), lambda: srv.count("POST", r"/v1/messages/batches$") == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_at_close_with_the_line_and_column(target, case):
    root, nothing_sent = target
    body, line, column, word = CASES[case]
    d = os.path.join(root, unique())
    os.mkdir(d)
    assert write_requests(d, body) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["id"] is None
    assert s["error"]["line"] == line, s["error"]
    msg = s["error"]["message"]
    assert word in msg, msg
    if column:
        assert msg.startswith(f"line {line}, column {column}: "), msg
    assert nothing_sent()


def test_ids_that_differ_after_a_nul_are_not_called_duplicates(mock_mount):
    # Before: "a\u0000b" and "a\u0000c" were both read as "a". Now the NUL itself is named.
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    body = (b'{"custom_id":"a\\u0000b",' + PARAMS + b"}\n" +
            b'{"custom_id":"a\\u0000c",' + PARAMS + b"}\n")
    assert write_requests(d, body) == errno.EINVAL
    msg = read_status(d)["error"]["message"]
    assert "duplicate" not in msg and "\\u0000 in custom_id" in msg, msg


def test_strict_json_that_cjson_reads_the_same_still_passes(mock_mount):
    # Unicode, escapes, CRLF, blank lines, spaces around the value, duplicate keys deeper
    # than the objects batchfs reads: all accepted.
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    body = (b"\r\n  " + content("\u00e9\u20ac\U0001F600 \\ud83d\\ude00".encode()) + b" \t\r\n"
            b"\n" + b'{"custom_id":"c2","params":{"model":"m","max_tokens":16,"messages":'
            b'[{"role":"user","content":"x","x":1,"x":2}]}}')
    assert write_requests(d, body) == 0
    assert read_status(d)["counts"]["total"] == 2


OAI = (b'{"custom_id":"o1","method":"POST","url":"/v1/chat/completions",'
       b'"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}')
OAI_CASES = {
    # The body OpenAI reads is the last one; batchfs checked the first.
    "duplicate_body_key": (OAI[:-1] + b',"body":{"model":"other"}}\n', 1, len(OAI) + 1,
                           "duplicate key"),
    "duplicate_model_in_body": (OAI.replace(b'"model":"gpt-4o-mini"',
                                            b'"model":"gpt-4o-mini","model":"x"') + b"\n", 1,
                                len(b'{"custom_id":"o1","method":"POST","url":"/v1/chat/'
                                    b'completions","body":{"model":"gpt-4o-mini",') + 1,
                                "duplicate key"),
    "duplicate_url_key": (OAI.replace(b'"url"', b'"url":"/v1/embeddings","url"', 1) + b"\n",
                          1, 58, "duplicate key"),
    "text_after_the_object": (OAI + b"x\n", 1, len(OAI) + 1, "text after the JSON value"),
    "nul_in_custom_id": (OAI.replace(b'"o1"', b'"o\\u0000"') + b"\n", 1, 14,
                         "\\u0000 in custom_id"),
}


@pytest.mark.parametrize("case", sorted(OAI_CASES))
def test_openai_lines_refused_at_close(fake_server, mount_factory, case):
    srv = fake_server("openai")
    m = mount_factory({"o": {"provider": "openai", "base_url": srv.url,
                             "api_key_env": "BFS_TEST_KEY", "poll_interval": "0.2",
                             "list_interval": "0.5"}}, env={"BFS_TEST_KEY": "sk-test-openai"})
    body, line, column, word = OAI_CASES[case]
    d = os.path.join(m.path, "o", unique())
    os.mkdir(d)
    assert write_requests(d, body) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == line, s
    msg = s["error"]["message"]
    assert word in msg and msg.startswith(f"line {line}, column {column}: "), msg
    assert srv.count("POST", r"^/v1/(files|batches)$") == 0  # nothing uploaded or created
