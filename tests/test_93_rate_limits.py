"""Rate limits, incremental discovery and poll guidance, against fakes that enforce a request
budget per key as the services document: Anthropic
(https://docs.anthropic.com/en/api/rate-limits: 429 rate_limit_error, retry-after,
anthropic-ratelimit-requests-reset), OpenAI (https://platform.openai.com/docs/guides/rate-limits:
429 rate_limit_exceeded, x-ratelimit-reset-requests), Azure OpenAI
(https://learn.microsoft.com/azure/ai-foundry/openai/quotas-limits: retry-after, retry-after-ms;
https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch: poll at most once a minute)."""
import errno
import json
import os
import time
import urllib.request

import pytest

from bfs import anthropic_requests, read_status, wait_results
from conftest import unique
from fake_anthropic import mount_remote
from mount import wait_for
from test_80_openai import Flavour, new_batch, write
from test_90_vertex import sa_key, vertex, vline  # noqa: F401 (fixtures)

API = "/v1/messages/batches"


def seed(srv, n):
    """n ended batches made elsewhere in the account (no HTTP)."""
    return [srv.create_batch([{"custom_id": "x", "params": {
        "model": "claude-test", "max_tokens": 8,
        "messages": [{"role": "user", "content": f"seed {i}"}]}}], age_s=7200)
        for i in range(n)]


def list_calls(srv, since=0):
    return [r for r in srv.requests[since:] if r["method"] == "GET" and r["path"] == API]


def spend_budget(srv, url, headers):
    """Uses up the key's budget with requests of another client of the same key."""
    while srv.rate_limited == 0:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers)).read()
        except urllib.error.HTTPError as e:
            assert e.code == 429
            e.read()


def test_200_batches_in_the_account_stay_under_the_budget(fake_server, mount_factory):
    # 20 requests per 4 s: a listing of every page (2 of 100) every 0.5 s needs 16-24 of
    # them, one page a listing 8-12.
    srv = fake_server("anthropic", rate_limit=20, rate_limit_window=4)
    ids = seed(srv, 200)
    m = mount_remote(mount_factory, srv)
    remote = os.path.join(m.path, "a")
    wait_for(lambda: set(ids) <= set(os.listdir(remote)), 15, what="200 batches listed")
    start = time.monotonic()
    d = os.path.join(remote, unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(3))
    wait_results(d)
    # Listings go on meanwhile: watch a few windows' worth.
    wait_for(lambda: time.monotonic() - start > 8 and len(list_calls(srv)) > 12, 20,
             what="listings")
    assert srv.rate_limited == 0, "batchfs went over the budget"
    assert srv.budget_peak() <= 20
    assert sorted(os.listdir(os.path.join(d, "results"))) == \
        ["req-0.json", "req-1.json", "req-2.json"]


@pytest.mark.parametrize("kind", ["openai", "vertex"])
def test_200_batches_listed_under_the_budget_openai_and_vertex(kind, request, fake_server,
                                                               mount_factory):
    # 14 requests per 4 s: every page (2 of 100) every 0.5 s needs 16-18, one page 8-9.
    if kind == "openai":
        fl = Flavour(fake_server, mount_factory)
        srv, m = fl.srv, fl.mount()
        ids = [srv.create_batch([fl.line("x")]) for _ in range(200)]
        remote, path = os.path.join(m.path, "o"), "/v1/batches"
    else:
        # Jobs that end at once (the fake's clock stays: it judges the token grants).
        srv, m = request.getfixturevalue("vertex")(fake_config={
            "jobs_page_max": 100, "pending_s": 0, "running_s": 0})
        ids = [srv.create_job([vline("x")]) for _ in range(200)]
        remote = os.path.join(m.path, "v")
        path = "/v1/projects/p/locations/us-east5/batchPredictionJobs"
    if kind == "openai":
        srv.advance(3600)  # every one ended long ago
    wait_for(lambda: set(ids) <= set(os.listdir(remote)), 15, what="200 batches listed")
    wait_for(lambda: all(read_status(os.path.join(remote, i))["state"] == "completed"
                         for i in ids), 15, what="all seen ended")
    srv.set_config(rate_limit=14, rate_limit_window=4)
    n0, t0 = len(srv.requests), time.monotonic()
    wait_for(lambda: time.monotonic() - t0 > 6 and
             sum(1 for r in srv.requests[n0:] if r["path"] == path) >= 10, 20,
             what="listings over more than a window")
    assert srv.rate_limited == 0, "batchfs went over the budget"
    assert srv.budget_peak(since=n0) <= 14


def test_incremental_discovery_lists_far_fewer_pages(fake_server, mount_factory):
    srv = fake_server("anthropic")
    seed(srv, 250)  # 3 pages of 100
    m = mount_remote(mount_factory, srv, list_interval="0.2")
    remote = os.path.join(m.path, "a")
    wait_for(lambda: len(os.listdir(remote)) >= 250, 15, what="250 batches listed")
    n0 = len(srv.requests)
    # Listings that start at the first page (no after_id): one per listing.
    wait_for(lambda: sum(1 for r in list_calls(srv, n0) if "after_id" not in r["query"]) >= 10,
             15, what="10 listings")
    calls = list_calls(srv, n0)
    listings = sum(1 for r in calls if "after_id" not in r["query"])
    assert len(calls) <= listings + 1, "later listings walked pages of known batches"
    # A batch made elsewhere meanwhile is on the first page: found all the same.
    bid = seed(srv, 1)[0]
    wait_for(lambda: bid in os.listdir(remote), 5, what="the new batch")

    # The full walk: with list_full_interval short, every listing reads every page again.
    srv2 = fake_server("anthropic")
    seed(srv2, 250)
    m2 = mount_remote(lambda *a, **k: mount_factory(*a, name="full", **k), srv2,
                      list_interval="0.2", list_full_interval="0.1")
    wait_for(lambda: len(os.listdir(os.path.join(m2.path, "a"))) >= 250, 15, what="listed")
    n0 = len(srv2.requests)
    wait_for(lambda: sum(1 for r in list_calls(srv2, n0) if "after_id" not in r["query"])
             >= 10, 15, what="10 listings")
    full = list_calls(srv2, n0)
    full_listings = sum(1 for r in full if "after_id" not in r["query"])
    assert len(full) >= 2.5 * full_listings, "a full walk reads every page"
    assert len(calls) / listings * 2.5 <= len(full) / full_listings


def test_a_long_retry_after_on_create_shows_in_status_and_is_honoured(fake_server,
                                                                      mount_factory):
    srv = fake_server("anthropic", rate_limit=2, rate_limit_window=3)
    m = mount_remote(mount_factory, srv, discover="none", rate_limit_wait="1")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    key = srv.config["api_key"]
    spend_budget(srv, srv.url + API, {"x-api-key": key, "anthropic-version": "2023-06-01"})
    refused = srv.rate_limited
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(anthropic_requests(2))
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 2.5, "the close waited out a wait longer than rate_limit_wait"
    s = read_status(d)
    assert s["state"] == "submitting"
    assert "rate limited, retrying at" in json.dumps(s), s
    assert srv.batches_created == 0 and srv.rate_limited > refused
    # The poller sends it when the provider said, exactly once.
    wait_results(d, timeout=20)
    assert srv.batches_created == 1
    creates = [r for r in srv.requests if r["method"] == "POST" and r["path"] == API]
    first, ok = creates[0], [r for r in creates if r["status"] == 200]
    assert first["status"] == 429 and int(first["retry_after"]) > 1
    assert len(ok) == 1
    assert ok[0]["mono"] - first["mono"] >= int(first["retry_after"]) - 1, \
        "sent again before the retry-after"
    assert "rate limited" not in json.dumps(read_status(d))


def test_a_create_waiting_for_a_rate_limit_survives_a_crash(fake_server, mount_factory):
    srv = fake_server("anthropic", rate_limit=2, rate_limit_window=4)
    m = mount_remote(mount_factory, srv, discover="none", rate_limit_wait="1")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    spend_budget(srv, srv.url + API, {"x-api-key": srv.config["api_key"],
                                      "anthropic-version": "2023-06-01"})
    with pytest.raises(OSError):
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(anthropic_requests(2))
    assert "rate limited, retrying at" in json.dumps(read_status(d))
    m.kill()
    m.start()
    # Not "interrupted before anything was sent": the part is sent once the budget allows.
    wait_results(d, timeout=20)
    assert srv.batches_created == 1
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["req-0.json", "req-1.json"]


def test_anthropic_retry_after_on_a_poll_spaces_the_polls(fake_server, mount_factory):
    # The API hints retry-after on GETs of a running batch; poll no sooner than it says
    # (max of it and poll_interval).
    srv = fake_server("anthropic", processing_s=5, poll_retry_after=2)
    m = mount_remote(mount_factory, srv, discover="none")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    bid = read_status(d)["id"]
    wait_results(d, timeout=20)
    gets = [r["mono"] for r in srv.requests if r["method"] == "GET" and
            r["path"] == f"{API}/{bid}"]
    assert 2 <= len(gets) <= 5, f"{len(gets)} polls of a 5 s batch (poll_interval 0.2)"
    assert all(b - a >= 1.9 for a, b in zip(gets, gets[1:])), gets


def test_openai_reset_header_is_honoured_for_polls_and_create(fake_server, mount_factory):
    fl = Flavour(fake_server, mount_factory, rate_limit=3, rate_limit_window=3)
    m = fl.mount(discover="none", rate_limit_wait="1")
    d = new_batch(m)
    spend_budget(fl.srv, fl.srv.base_url + "/batches", {"Authorization": f"Bearer {fl.key}"})
    with pytest.raises(OSError):
        write(d, fl.requests(2))
    s = read_status(d)
    assert s["state"] == "submitting" and "rate limited, retrying at" in json.dumps(s), s
    wait_results(d, timeout=25)
    assert len(fl.srv.batches) == 1
    # Every 429 came from the budget, and the budget was never exceeded afterwards.
    assert fl.srv.budget_peak() <= 3


def test_azure_polls_at_most_once_a_minute_by_default(fake_server, mount_factory):
    from test_85_azure import AzureFlavour
    az = AzureFlavour(fake_server, mount_factory)
    remote = az.remote()
    del remote["min_poll_interval"]  # the provider's guidance applies
    m = mount_factory(sections={"o": remote}, env={"BFS_TEST_KEY": az.key})
    d = new_batch(m)
    write(d, az.requests(1))
    wait_for(lambda: az.srv.batches, 5, what="the batch")
    bid = next(iter(az.srv.batches))
    # Nothing to wait for: watch the status calls of a few poll_intervals.
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 > 3, 5, interval=0.2, what="3 s")
    gets = [r for r in az.srv.requests if r["method"] == "GET" and r["path"].endswith(bid)]
    assert len(gets) <= 1, f"{len(gets)} status calls within 3 s (poll_interval 0.2)"
    assert read_status(d)["state"] in ("validating", "in_progress", "finalizing")
