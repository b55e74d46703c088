"""Validation at the commit point: close() fails with EINVAL, status names the line."""
import errno
import json
import os

import pytest

from conftest import unique
from bfs import anthropic_line, anthropic_requests, read_status


def write_requests(d, body):
    """Write body to requests.jsonl as `cat > file` would; return close()'s errno or 0."""
    fd = os.open(os.path.join(d, "requests.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body.encode() if isinstance(body, str) else body)
    except OSError:
        os.close(fd)
        raise
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


GOOD = anthropic_line("ok-1")

CASES = {
    "not_json": (GOOD + "\n{nope\n", 2, "not valid JSON"),
    "not_an_object": (GOOD + "\n[1, 2]\n", 2, "object"),
    "missing_custom_id": ('{"params": {"model": "m", "max_tokens": 1, "messages": []}}\n', 1,
                          "custom_id"),
    "custom_id_not_a_string": ('{"custom_id": 7, "params": {"model": "m", "max_tokens": 1,'
                               ' "messages": []}}\n', 1, "custom_id"),
    "custom_id_refused_by_provider": (GOOD + "\n" + anthropic_line("has space") + "\n", 2,
                                      "custom_id"),
    "custom_id_too_long": (anthropic_line("x" * 65) + "\n", 1, "custom_id"),
    "missing_params": ('{"custom_id": "a"}\n', 1, "params"),
    "params_not_an_object": ('{"custom_id": "a", "params": "x"}\n', 1, "params"),
    "missing_model": ('{"custom_id": "a", "params": {"max_tokens": 1, "messages": []}}\n', 1,
                      "model"),
    "max_tokens_wrong_type": ('{"custom_id": "a", "params": {"model": "m", "max_tokens": "9",'
                              ' "messages": []}}\n', 1, "max_tokens"),
    "messages_missing": ('{"custom_id": "a", "params": {"model": "m", "max_tokens": 1}}\n', 1,
                         "messages"),
    "unknown_top_level_field": ('{"custom_id": "a", "params": {"model": "m", "max_tokens": 1,'
                                ' "messages": []}, "betas": ["x"]}\n', 1, "unexpected field"),
    "duplicate_custom_id": (GOOD + "\n\n" + anthropic_line("b") + "\n" + GOOD + "\n", 4,
                            "duplicate"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_line_fails_close_with_einval_and_names_the_line(mock_mount, case):
    body, line, word = CASES[case]
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert write_requests(d, body) == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected"
    assert s["id"] is None
    assert s["error"]["line"] == line, s["error"]
    assert word in s["error"]["message"], s["error"]
    assert f"line {line}" in s["error"]["message"]
    # nothing was sent: the mock holds no batch
    assert not os.listdir(os.path.join(mock_mount.cache, "mock", "mock"))


def test_duplicate_names_the_earlier_line(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    body = anthropic_line("a") + "\n" + anthropic_line("b") + "\n" + anthropic_line("a") + "\n"
    assert write_requests(d, body) == errno.EINVAL
    assert "line 1" in read_status(d)["error"]["message"].split("duplicate")[1]


def test_a_rejected_batch_can_be_rewritten_and_then_submits(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert write_requests(d, "garbage\n") == errno.EINVAL
    assert read_status(d)["state"] == "rejected"
    assert write_requests(d, anthropic_requests(2)) == 0
    s = read_status(d)
    assert s["state"] in ("in_progress", "completed") and s["error"] is None
    assert s["counts"]["total"] == 2


def test_a_rejected_batch_can_be_removed(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert write_requests(d, "garbage\n") == errno.EINVAL
    os.unlink(os.path.join(d, "requests.jsonl"))
    os.rmdir(d)
    assert not os.path.exists(d)


def test_blank_lines_crlf_and_a_last_line_without_newline_are_accepted(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    body = "\r\n" + anthropic_line("a") + "\r\n\n   \n" + anthropic_line("b")
    assert write_requests(d, body) == 0
    assert read_status(d)["counts"]["total"] == 2


def test_only_blank_lines_is_rejected(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert write_requests(d, "\n\n  \n") == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and "no request" in s["error"]["message"]


def test_invalid_json_never_becomes_a_batch_even_after_remount(mock_mount):
    d = os.path.join(mock_mount.path, "mock", unique())
    os.mkdir(d)
    assert write_requests(d, GOOD + "\n{\n") == errno.EINVAL
    mock_mount.restart()
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 2
    assert not os.listdir(os.path.join(mock_mount.cache, "mock", "mock"))
    json.dumps(s)
