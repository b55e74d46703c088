"""Azure and OpenAI as they behave in production (issue 13): file expiry and Azure's file cap,
input files deleted once their results are in, quota failures (token_limit_exceeded) and
`echo resubmit > ctl` / quota_retry, a BOM refused locally, Azure's poll interval.

The fakes follow the documents: https://platform.openai.com/docs/api-reference/files/create
(expires_after), https://platform.openai.com/docs/api-reference/batch/create
(output_expires_after), https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch
(14-30 day expiry, 500 files without one, token_limit_exceeded, polling every 60 s or more).
"""
import errno
import json
import os
import subprocess

import pytest

from bfs import read_status, wait_results, wait_state
from mount import wait_for
from test_80_openai import Flavour, new_batch, only_batch, write
from test_85_azure import AzureFlavour

DAY = 86400


@pytest.fixture(params=["openai", "azure"])
def fl(request, fake_server, mount_factory):
    cls = Flavour if request.param == "openai" else AzureFlavour
    return cls(fake_server, mount_factory)


@pytest.fixture
def az(fake_server, mount_factory):
    return AzureFlavour(fake_server, mount_factory)


def ctl(d, word):
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write(word + "\n")


def batches_shown(m):
    return [n for n in os.listdir(os.path.join(m.path, "o")) if not n.startswith(".")]


def file_ids(fl):
    with fl.srv.lock:
        return set(fl.srv.files)


# --- expiry and the file cap ---------------------------------------------------------------

def test_uploads_and_creates_carry_an_expiry_of_14_days(fl):
    m = fl.mount()
    d = new_batch(m)
    write(d, fl.requests(2))
    wait_state(d, "completed")
    up = fl.srv.uploads[0]
    assert up["fields"] == ["expires_after[anchor]", "expires_after[seconds]", "purpose"]
    create = fl.srv.creates[0]
    assert create["output_expires_after"] == {"anchor": "created_at", "seconds": 14 * DAY}
    wait_results(d)
    with fl.srv.lock:
        outs = [f["obj"] for f in fl.srv.files.values() if f["obj"]["purpose"] ==
                "batch_output"]
    assert outs and all(o["expires_at"] == o["created_at"] + 14 * DAY for o in outs)


def test_configured_expiry_is_sent(fl):
    m = fl.mount(input_expires_after=str(20 * DAY), output_expires_after=str(30 * DAY))
    d = new_batch(m)
    write(d, fl.requests(1))
    wait_state(d, "completed")
    assert fl.srv.creates[0]["output_expires_after"]["seconds"] == 30 * DAY
    # What was sent (the input file itself may be deleted by now: its results are in).
    up = fl.srv.uploads[0]["values"]
    assert up["expires_after[anchor]"] == "created_at", up
    assert up["expires_after[seconds]"] == str(20 * DAY), up


def mount_refusal(batchfs_bin, tmp_path, line):
    cfg = tmp_path / "cfg"
    cfg.write_text(f"[z]\nprovider = azure\nendpoint = http://127.0.0.1:9\n"
                   f"api_key_env = BFS_TEST_KEY\n{line}\n")
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path}/c", str(mnt)],
                       env=dict(os.environ, BFS_TEST_KEY="k"), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    return r.stderr


@pytest.mark.parametrize("key,value", [("input_expires_after", str(13 * DAY)),
                                       ("output_expires_after", str(31 * DAY)),
                                       ("input_expires_after", "2w")])
def test_expiry_out_of_azures_range_is_refused_at_mount(batchfs_bin, tmp_path, key, value):
    err = mount_refusal(batchfs_bin, tmp_path, f"{key} = {value}")
    assert f"{key} must be a whole number of seconds from 1209600 to 2592000" in err


@pytest.mark.parametrize("line,msg", [("quota_retry = yes", "quota_retry must be on or off"),
                                      ("quota_retry_attempts = 0",
                                       "quota_retry_attempts must be a whole number"),
                                      ("quota_retry_delay = -1",
                                       "quota_retry_delay must be a positive number")])
def test_bad_quota_retry_keys_are_refused_at_mount(batchfs_bin, tmp_path, line, msg):
    assert msg in mount_refusal(batchfs_bin, tmp_path, line)


def test_azure_file_cap_is_never_reached(az):
    """Azure keeps at most 500 files without an expiry (lowered to 3 here): with expiry set
    and inputs deleted once their results are in, batch after batch goes through."""
    az.srv.set_config(max_files_no_expiry=3)
    m = az.mount()
    for i in range(5):
        d = new_batch(m)
        write(d, az.requests(1, prefix=f"b{i}-"))
        wait_results(d)
    assert len(az.srv.batches) == 5
    assert not [r for r in az.srv.requests if r["status"] == 400]


def test_input_file_is_kept_until_results_are_in_then_deleted(fl):
    m = fl.mount()
    # Every download of the results fails until the fault is lifted: results are not in.
    fault = fl.srv.add_fault(method="GET", path=r"/files/[^/]+/content$", status=500,
                             times=0)
    d = new_batch(m)
    write(d, fl.requests(2))
    b = only_batch(fl)
    wait_state(d, "completed")
    wait_for(lambda: fault.hits >= 1 and read_status(d)["error"], 20, what="a failed download")
    assert read_status(d)["results"] != "ready"
    assert b.input_file_id in file_ids(fl) and not fl.srv.deleted_files
    fl.srv.clear_faults()
    ctl(d, "refresh")
    wait_results(d)
    wait_for(lambda: b.input_file_id in fl.srv.deleted_files, 10, what="input deleted")
    assert b.input_file_id not in file_ids(fl)
    # Output and error files stay: they expire on their own.
    assert b.output_file_id in file_ids(fl)


def test_input_file_of_a_batch_made_elsewhere_is_never_deleted(fl):
    m = fl.mount()
    bid = fl.srv.create_batch([fl.line("x")], endpoint="/v1/chat/completions")
    fl.srv.advance(5)
    d = os.path.join(m.path, "o", bid)
    wait_for(lambda: os.path.isdir(d), 10, what="foreign batch listed")
    os.listdir(d)  # looking inside fetches its results
    wait_results(d)
    with fl.srv.lock:
        fid = fl.srv.batches[bid].input_file_id
    assert fid in file_ids(fl) and fid not in fl.srv.deleted_files


# --- quota failures and resubmit -----------------------------------------------------------

def test_quota_failure_can_be_resubmitted_once(fl):
    fl.srv.set_config(token_limit_batches=1)
    m = fl.mount()
    d = new_batch(m)
    write(d, fl.requests(3))
    s = wait_state(d, "failed")
    first = s["id"]
    assert "token_limit_exceeded" in s["error"]["message"]
    assert "echo resubmit > ctl" in s["error"]["message"]
    assert "resubmit" in open(os.path.join(d, "ctl")).read()
    ctl(d, "resubmit")
    s = read_status(d)
    assert s["id"] != first and s["state"] != "failed"
    assert s["resubmits"] == 1 and s["parts"][0]["resubmits"] == 1
    s = wait_state(d, "completed")
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["r0.json", "r1.json", "r2.json"]
    assert len(fl.srv.batches) == 2 and len(fl.srv.creates) == 2
    assert open(os.path.join(d, "id")).read() == s["id"] + "\n"
    # The failed batch is ours: never shown as made elsewhere, its input deleted.
    fl.srv.advance(1)
    wait_for(lambda: fl.srv.count("GET", r"/batches$") >= 2, 10, what="two listings")
    assert batches_shown(m) == [os.path.basename(d)]
    wait_for(lambda: fl.srv.batches[first].input_file_id in fl.srv.deleted_files, 10,
             what="the failed batch's input deleted")
    # A completed batch is not resubmitted.
    with pytest.raises(OSError) as e:
        ctl(d, "resubmit")
    assert e.value.errno == errno.EINVAL
    assert len(fl.srv.batches) == 2


def test_quota_retry_resubmits_with_backoff_and_says_so(fl):
    fl.srv.set_config(token_limit_batches=2)
    m = fl.mount(quota_retry="on", quota_retry_delay="0.5")
    d = new_batch(m)
    write(d, fl.requests(2))
    seen = wait_for(lambda: (lambda s: s if s["state"] == "failed" and "quota_retry: "
                             "resubmitting at" in (s["error"] or {}).get("message", "")
                             else None)(read_status(d)), 20, 0.02, what="retry scheduled")
    assert "token_limit_exceeded" in seen["error"]["message"]
    assert "(attempt 1 of 8)" in seen["error"]["message"]
    assert seen["error"]["attempt"] == 1
    s = wait_state(d, "completed", timeout=30)
    assert s["resubmits"] == 2 and s["error"] is None
    assert len(fl.srv.batches) == 3
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["r0.json", "r1.json"]


def test_quota_refused_at_create_is_retried(az):
    """Azure "fail fast" regions refuse the create with a 400 naming token_limit_exceeded."""
    az.srv.set_config(token_limit_at_create=1)
    m = az.mount(quota_retry="on", quota_retry_delay="0.3")
    m.expect_log("token_limit_exceeded")
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, az.requests(2))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and "token_limit_exceeded" in s["error"]["message"]
    assert "resubmitting at" in s["error"]["message"]
    s = wait_state(d, "completed", timeout=30)
    assert s["resubmits"] == 1 and len(az.srv.batches) == 1
    wait_results(d)


def test_quota_refused_at_create_without_retry_resubmits_by_hand(az):
    az.srv.set_config(token_limit_at_create=1)
    m = az.mount()
    m.expect_log("token_limit_exceeded")
    d = new_batch(m)
    with pytest.raises(OSError):
        write(d, az.requests(2))
    assert read_status(d)["state"] == "failed"
    assert not az.srv.batches
    ctl(d, "resubmit")
    wait_state(d, "completed")
    assert len(az.srv.batches) == 1


def test_batch_failed_at_validation_is_rewritable(fl):
    m = fl.mount()
    d = new_batch(m)
    write(d, fl.line("a", model="fail-validation") + "\n")
    s = wait_state(d, "failed")
    first = s["id"]
    assert os.access(os.path.join(d, "requests.jsonl"), os.W_OK)
    write(d, fl.requests(2))
    s = wait_state(d, "completed")
    assert s["id"] != first and "resubmits" not in s
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["r0.json", "r1.json"]
    fl.srv.advance(1)
    wait_for(lambda: fl.srv.count("GET", r"/batches$") >= 2, 10, what="two listings")
    assert batches_shown(m) == [os.path.basename(d)]


def test_batch_that_ran_requests_is_not_resubmitted(fl):
    m = fl.mount()
    d = new_batch(m)
    write(d, fl.requests(1))
    wait_state(d, "completed")
    assert "resubmit\t" in open(os.path.join(d, "ctl")).read()
    with pytest.raises(OSError) as e:
        ctl(d, "resubmit")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        write(d, fl.requests(1))
    assert e.value.errno == errno.EACCES


# --- BOM, poll interval ----------------------------------------------------------------------

def test_bom_is_refused_locally_with_line_1(az):
    m = az.mount()
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, "\ufeff" + az.requests(2))
    assert e.value.errno == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 1
    assert "byte order mark" in s["error"]["message"]
    assert not az.srv.uploads


def test_azure_poll_interval_is_at_least_60_s(az, mount_factory):
    remote = az.remote()
    del remote["min_poll_interval"]  # Azure's guidance applies (provider_ops.min_poll_interval)
    m = mount_factory(sections={"o": remote}, env={"BFS_TEST_KEY": az.key})
    d = new_batch(m)
    write(d, az.requests(1))
    b = only_batch(az)
    wait_for(lambda: az.srv.batch_status(b.id) == "completed", 10, what="fake done")
    assert read_status(d)["state"] != "completed"  # not polled again yet
    ctl(d, "refresh")  # a refresh still polls at once
    assert read_status(d)["state"] == "completed"
    assert az.srv.count("GET", rf"^/openai/batches/{b.id}$") == 1


def test_only_the_part_that_failed_for_quota_is_resubmitted(fl):
    fl.srv.set_config(token_limit_skip=2, token_limit_batches=1)
    m = fl.mount(max_requests="2")
    d = new_batch(m)
    write(d, fl.requests(5))
    s = wait_for(lambda: (lambda s: s if s["results"] == "ready" else None)(read_status(d)),
                 20, what="results of the parts that ran")
    assert s["state"] == "failed"
    assert [p["state"] for p in s["parts"]] == ["completed", "completed", "failed"]
    assert "token_limit_exceeded" in s["parts"][2]["error"]["message"]
    before = {n: open(os.path.join(d, "results", n), "rb").read()
              for n in os.listdir(os.path.join(d, "results"))}
    assert sorted(before) == ["r0.json", "r1.json", "r2.json", "r3.json"]
    # Parts ran: the file stays read-only; resubmit sends part 3 alone.
    with pytest.raises(OSError) as e:
        write(d, fl.requests(1))
    assert e.value.errno == errno.EACCES
    ids = [p["id"] for p in s["parts"]]
    ctl(d, "resubmit")
    s = wait_state(d, "completed")
    assert [p["id"] for p in s["parts"]][:2] == ids[:2] and s["parts"][2]["id"] != ids[2]
    assert [p.get("resubmits", 0) for p in s["parts"]] == [0, 0, 1]
    assert len(fl.srv.batches) == 4
    wait_results(d)
    for n, data in before.items():
        assert open(os.path.join(d, "results", n), "rb").read() == data
    assert [json.loads(x)["custom_id"] for x in
            open(os.path.join(d, "results.jsonl"), "rb").read().splitlines()] == \
        ["r0", "r1", "r2", "r3", "r4"]


def test_a_scheduled_quota_retry_survives_a_restart(az):
    az.srv.set_config(token_limit_batches=1)
    m = az.mount(quota_retry="on", quota_retry_delay="2")
    d = new_batch(m)
    write(d, az.requests(2))
    wait_for(lambda: "resubmitting at" in ((read_status(d)["error"] or {}).get("message") or ""),
             20, what="retry scheduled")
    m.restart()
    s = wait_state(d, "completed", timeout=30)
    assert s["resubmits"] == 1 and len(az.srv.batches) == 2 and len(az.srv.creates) == 2


def test_resubmit_whose_create_answer_is_lost_makes_one_batch(fl):
    """The resubmit goes through the commit's exactly-once path: a lost answer is looked for
    by its identity, never created twice."""
    fl.srv.set_config(token_limit_batches=1)
    m = fl.mount()
    d = new_batch(m)
    write(d, fl.requests(2))
    first = wait_state(d, "failed")["id"]
    fl.srv.add_fault(method="POST", path=f"^{fl.api}/batches$", action="drop_after")
    m.expect_log("was lost")
    ctl(d, "resubmit")
    s = wait_state(d, "completed")
    assert s["id"] != first and s["resubmits"] == 1
    assert len(fl.srv.batches) == 2 and fl.count("POST", "/batches") == 2
    wait_results(d)
