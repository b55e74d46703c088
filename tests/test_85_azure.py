"""provider = azure against the fake Azure OpenAI Batch API (tests/lib/fake_openai.py FakeAzure):
the scenarios of test_80_openai.py, then what only Azure does."""
import errno
import os
import subprocess

import pytest

from bfs import read_status, wait_state
from test_80_openai import (Flavour, new_batch, only_batch, scenario_cancel_keeps_partial_results,
                            scenario_custom_ids_escaped, scenario_failed_at_validation,
                            scenario_kill_before_create, scenario_kill_before_create_answer,
                            scenario_made_elsewhere_appears, scenario_parts, scenario_whole_life,
                            write)

VERSION = "2024-10-21"


class AzureFlavour(Flavour):
    name = "azure"
    key = "azure-test-key"
    model = "gpt-4o-mini-batch"   # a deployment of the fake
    url = "/chat/completions"     # as every Azure sample writes it (B.4)
    api = "/openai"

    def remote(self, **extra):
        r = {"provider": "azure", "endpoint": self.srv.url, "api_key_env": "BFS_TEST_KEY",
             "poll_interval": "0.2", "list_interval": "0.5", "min_poll_interval": "0"}
        r.update(extra)
        return r


@pytest.fixture
def az(fake_server, mount_factory):
    return AzureFlavour(fake_server, mount_factory)


def api_requests(fl):
    return [r for r in fl.srv.requests if r["path"].startswith("/openai/")]


def test_whole_life_with_api_key_version_and_pending_upload(az):
    m, d, b = scenario_whole_life(az)
    reqs = api_requests(az)
    assert reqs
    for r in reqs:
        assert r["headers"].get("api-key") == az.key and "Authorization" not in r["headers"]
        assert f"api-version={VERSION}" in r["query"], r
    # The upload was "pending": batchfs waited for "processed" before the create.
    polls = [i for i, r in enumerate(reqs) if r["method"] == "GET" and
             r["path"] == f"/openai/files/{b.input_file_id}"]
    create = next(i for i, r in enumerate(reqs) if r["method"] == "POST" and
                  r["path"] == "/openai/batches")
    assert polls and polls[0] < create
    assert az.srv.creates[0]["endpoint"] == "/chat/completions"
    s = read_status(d)
    assert s["provider_state"] == "Completed"  # Azure capitalises; shown verbatim
    assert az.key not in m.read_log()


def test_cancel_keeps_partial_results(az):
    scenario_cancel_keeps_partial_results(az)


def test_batch_failed_at_validation_names_the_users_line(az):
    scenario_failed_at_validation(az)


def test_a_file_over_max_requests_goes_in_parts(az):
    scenario_parts(az)


def test_custom_ids_needing_escaping_round_trip(az):
    scenario_custom_ids_escaped(az)


def test_batch_made_directly_on_the_provider_appears(az):
    scenario_made_elsewhere_appears(az)


def test_kill_while_waiting_for_the_upload_deletes_it_later(az, tmp_path):
    scenario_kill_before_create(az, tmp_path, r"^/openai/files/file-[0-9a-f]+$")


def test_kill_before_the_create_answer_adopts_the_batch(az, tmp_path):
    scenario_kill_before_create_answer(az, tmp_path)


def test_unknown_deployment_fails_the_batch(az):
    az.srv.set_config(errors_as_object=True)  # as the 2024-10-21 spec types it (B.5)
    m = az.mount()
    d = new_batch(m)
    write(d, az.line("a", model="no-such-deployment") + "\n")
    s = wait_state(d, "failed")
    assert "model_not_found" in s["error"]["message"] and s["error"]["line"] == 1
    assert read_status(d)["id"] == only_batch(az).id


def test_urls_with_and_without_v1_make_one_batch(az):
    m = az.mount()
    d = new_batch(m)
    write(d, az.line("a") + "\n" + az.line("b", url="/v1/chat/completions") + "\n")
    wait_state(d, "completed")
    assert az.srv.creates[0]["endpoint"] == "/chat/completions"


def test_mixed_deployments_are_refused_locally(az):
    m = az.mount()
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, az.line("a") + "\n" + az.line("b", model="other") + "\n")
    assert e.value.errno == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == 2
    assert "one deployment" in s["error"]["message"]
    assert not az.srv.uploads


def test_token_command_gives_a_bearer_token_renewed_after_a_401(az, tmp_path):
    runs = tmp_path / "runs"
    cmd = f"echo run >> {runs}; echo entra-test-token"
    m = az.mount(api_key_env="", token_command=cmd)
    az.srv.add_fault(method="POST", path="^/openai/files$", status=401)
    d = new_batch(m)
    write(d, az.requests(2))
    wait_state(d, "completed")
    for r in api_requests(az):
        assert r["headers"].get("Authorization") == "Bearer entra-test-token"
        assert "api-key" not in r["headers"]
    assert runs.read_text().count("run") == 2  # at start, then after the 401
    assert "entra-test-token" not in m.read_log()


def test_upload_never_processed_fails_clearly_and_is_deleted(az):
    az.srv.set_config(file_pending_s=60)
    m = az.mount(file_wait="1")
    m.expect_log("cannot submit batch")
    d = new_batch(m)
    with pytest.raises(OSError) as e:
        write(d, az.requests(2))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and "still 'pending' after 1 s" in s["error"]["message"]
    assert not az.batch_files() and len(az.srv.deleted_files) == 1
    assert not az.srv.batches


def test_v1_api_needs_no_api_version(az):
    m = az.mount(endpoint=az.srv.url + "/openai/v1/")
    d = new_batch(m)
    write(d, az.requests(2))
    wait_state(d, "completed")
    reqs = api_requests(az)
    assert reqs and all(r["path"].startswith("/openai/v1/") for r in reqs)
    assert not any("api-version" in r["query"] for r in reqs)


def test_unsupported_api_version_is_the_providers_message(az):
    m = az.mount(api_version="2023-05-15")
    m.expect_log("cannot submit batch")
    d = new_batch(m)
    with pytest.raises(OSError):
        write(d, az.requests(1))
    assert "API version not supported" in read_status(d)["error"]["message"]


def test_endpoint_must_be_configured(batchfs_bin, tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text("[z]\nprovider = azure\napi_key_env = BFS_TEST_KEY\n")
    env = dict(os.environ, BFS_TEST_KEY="k")
    env.pop("AZURE_OPENAI_ENDPOINT", None)
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={cfg},cache={tmp_path}/c", str(mnt)],
                       env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "endpoint is not set" in r.stderr
