"""Hostile providers (issue 12): for each provider family, a results download that is
malformed, repeats itself, trickles, stalls, resets, lies about its length, inflates, redirects
elsewhere or fails in storms. The daemon keeps every good result, names what it could not keep,
stays small, never hangs past its deadlines, unmounts at once and writes nothing outside its
cache directory. The faults are tests/lib/fake_server.py's (hostile.py aims them)."""
import json
import os
import subprocess
import time

import pytest

from bfs import read_status, wait_state
from hostile import FAMILIES, family, vm_rss_kb
from mount import is_mounted, wait_for

RSS_MAX_KB = 64 * 1024


def settled(d, timeout=30):
    """Waits until the batch's results are settled (no longer pending or downloading)."""
    def check():
        s = read_status(d)
        return s if s["results"] not in ("pending", "downloading") else None
    return wait_for(check, timeout, interval=0.05, what="results settled")


def names(d):
    p = os.path.join(d, "results")
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def tree_files(root):
    out = set()
    for dp, _, fs in os.walk(root):
        out.update(os.path.join(dp, f) for f in fs)
    return out


@pytest.fixture(params=FAMILIES)
def fam(request, fake_server, mount_factory):
    return family(request.param, fake_server, mount_factory)


# --- bad result lines: one bad line costs that line, never the set, never "ready" ----------

BAD_LINES = {
    "not-json": ("{\"custom_id\": \"zz\", ", "not strict JSON"),
    "empty-id": (None, "empty custom_id"),
    "no-id": ("{\"result\": {}}", "no custom_id string"),
    "not-object": ("[1, 2]", "not a JSON object"),
    "nul-in-id": (None, "not strict JSON"),
    "trailing-text": (None, "not strict JSON"),
}


def bad_line(kind, good):
    """A bad line made from a good result line (same shape as the family's)."""
    o = json.loads(good)
    if kind == "empty-id":
        o["custom_id"] = ""
        return json.dumps(o)
    if kind == "nul-in-id":
        return json.dumps(o).replace(json.dumps(o["custom_id"]),
                                     json.dumps(o["custom_id"] + "\u0000x"), 1)
    if kind == "trailing-text":
        return json.dumps(o) + " trailing"
    return BAD_LINES[kind][0]


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_result_line_costs_that_line_only(fam, kind):
    ids = ["q0", "q1", "q2"]
    holder = {}

    def mangle(body):
        lines = body.rstrip(b"\n").split(b"\n")
        holder["n"] = len(lines) + 1  # the bad line goes last: its line number
        return body.rstrip(b"\n") + b"\n" + bad_line(kind, lines[0].decode()).encode() + b"\n"

    fam.srv.add_fault(method="GET", path=fam.results_path, action="rewrite", fn=mangle)
    d = fam.submit(ids)
    wait_state(d, "completed", timeout=30)
    s = settled(d)
    assert s["results"] == "incomplete", s
    assert names(d) == [f"{c}.json" for c in ids]
    msg = s["error"]["message"]
    assert "1 result line could not be kept" in msg, msg
    assert f"line {holder['n']}: {BAD_LINES[kind][1]}" in msg, msg
    with open(os.path.join(d, "results.jsonl")) as f:
        assert [json.loads(x)["custom_id"] for x in f] == ids


def test_repeated_custom_ids_keep_one_file_each_and_say_incomplete(fam):
    ids = ["q0", "q1", "q2"]

    def repeat(body):
        lines = body.rstrip(b"\n").split(b"\n")
        # the first line again, then a line whose id differs from q1's only after a NUL
        dup = lines[0]
        o = json.loads(lines[1])
        cid = o["custom_id"]
        nul = json.dumps(o).replace(json.dumps(cid), json.dumps(cid + "\u0000b"), 1)
        return b"\n".join(lines + [dup, nul.encode()]) + b"\n"

    fam.srv.add_fault(method="GET", path=fam.results_path, action="rewrite", fn=repeat)
    d = fam.submit(ids)
    s = settled(d, timeout=40)
    assert s["results"] == "incomplete", s
    msg = s["error"]["message"]
    assert "2 result lines could not be kept" in msg, msg
    assert "repeats an earlier line" in msg, msg
    assert "line 4:" in msg and "line 5:" in msg, msg
    assert names(d) == [f"{c}.json" for c in ids]


def test_many_bad_lines_are_counted_and_the_list_is_bounded(fam):
    ids = ["q0", "q1"]
    fam.srv.add_fault(method="GET", path=fam.results_path, action="rewrite",
                      append=["not json %d" % i for i in range(300)])
    d = fam.submit(ids)
    s = settled(d, timeout=40)
    assert s["results"] == "incomplete", s
    msg = s["error"]["message"]
    assert "300 result lines could not be kept" in msg, msg
    assert "more" in msg and len(msg) < 1024, msg
    assert names(d) == [f"{c}.json" for c in ids]


def test_only_bad_lines_is_unavailable_not_an_empty_ready(fam):
    fam.srv.add_fault(method="GET", path=fam.results_path, action="rewrite",
                      fn=lambda body: b"garbage\n" * 3)
    d = fam.submit(["q0"])
    s = settled(d, timeout=40)
    assert s["results"] == "unavailable", s
    assert "3 result lines could not be kept" in s["error"]["message"], s
    assert names(d) == []
