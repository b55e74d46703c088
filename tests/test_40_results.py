"""Results: one file per custom_id, results.jsonl in request order, served from the cache."""
import calendar
import json
import os
import subprocess
import time

from conftest import unique
from bfs import anthropic_line, read_status, wait_results


def submit(m, body, remote="mock"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    return d


def rfc3339(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def test_results_appear_only_when_complete_and_match_requests(mock_mount):
    ids = [f"q{i}" for i in range(20)]
    body = "".join(anthropic_line(c, f"say {c}") + "\n" for c in ids)
    d = submit(mock_mount, body)
    # an incomplete listing never looks complete: before the end there is no results/
    s = read_status(d)
    if s["results"] != "ready":
        assert "results" not in os.listdir(d) and "results.jsonl" not in os.listdir(d)
    s = wait_results(d)
    names = sorted(os.listdir(os.path.join(d, "results")))
    assert names == sorted(c + ".json" for c in ids)
    ended = rfc3339(s["ended_at"])
    for c in ids:
        p = os.path.join(d, "results", c + ".json")
        with open(p, "rb") as f:
            data = f.read()
        st = os.stat(p)
        assert st.st_size == len(data)
        assert int(st.st_mtime) == ended
        assert data.endswith(b"}\n") and data.count(b"\n") == 1
        r = json.loads(data)
        assert r["custom_id"] == c
        assert r["result"]["type"] == "succeeded"
        assert r["result"]["message"]["content"][0]["text"] == f"say {c}"


def test_results_jsonl_is_every_line_in_request_order(mock_mount):
    ids = [f"z{i:03d}" for i in range(50)]
    body = "".join(anthropic_line(c) + "\n" for c in ids)
    d = submit(mock_mount, body)
    wait_results(d)
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(x)["custom_id"] for x in lines[:-1]] == ids
    assert os.stat(os.path.join(d, "results.jsonl")).st_size == len(data)
    # each line is byte-identical to the file of that custom_id
    for c, line in zip(ids, lines):
        with open(os.path.join(d, "results", c + ".json"), "rb") as f:
            assert f.read() == line + b"\n"
    # and reads at odd offsets agree with the whole (jq / tail / dd do those)
    with open(os.path.join(d, "results.jsonl"), "rb") as f:
        f.seek(1234)
        assert f.read(777) == data[1234:1234 + 777]
    tail = subprocess.run(["tail", "-n", "1", os.path.join(d, "results.jsonl")],
                          capture_output=True, check=True).stdout
    assert json.loads(tail)["custom_id"] == ids[-1]


def test_errored_requests_get_errored_results_and_counts(mock_mount):
    body = anthropic_line("good") + "\n" + anthropic_line("bad", model="mock-error") + "\n"
    d = submit(mock_mount, body)
    s = wait_results(d)
    assert s["counts"]["succeeded"] == 1 and s["counts"]["errored"] == 1
    with open(os.path.join(d, "results", "bad.json")) as f:
        r = json.load(f)
    assert r["result"]["type"] == "errored"
    assert r["result"]["error"]["error"]["type"] == "invalid_request_error"


def test_results_are_read_only(mock_mount):
    d = submit(mock_mount, anthropic_line("a") + "\n")
    wait_results(d)
    import pytest
    with pytest.raises(PermissionError):
        open(os.path.join(d, "results", "a.json"), "w")
    # an unlink only goes with the whole ended batch (`rm -r`, see test_15_tools): alone it
    # changes nothing
    os.unlink(os.path.join(d, "results", "a.json"))
    assert os.listdir(os.path.join(d, "results")) == ["a.json"]
    with pytest.raises(PermissionError):
        open(os.path.join(d, "results.jsonl"), "a")


def test_ls_and_jq_style_reads_of_many_results(mock_mount):
    n = 3000
    body = "".join(anthropic_line(f"m{i}", f"t{i}") + "\n" for i in range(n))
    d = submit(mock_mount, body)
    wait_results(d, timeout=60)
    out = subprocess.run(["ls", "-l", os.path.join(d, "results")], capture_output=True,
                         text=True, check=True).stdout
    rows = [r for r in out.splitlines() if r.endswith(".json")]
    assert len(rows) == n
    assert len(set(os.listdir(os.path.join(d, "results")))) == n
    cat = subprocess.run(f"cat {d}/results/*", shell=True, capture_output=True, check=True).stdout
    assert cat.count(b"\n") == n
    assert sum(len(x) for x in cat.split(b"\n")) + n == os.stat(
        os.path.join(d, "results.jsonl")).st_size
