"""Cloud identity through the mount: Google's metadata server, workload identity federation
(external_account) and service-account impersonation for Vertex; Azure managed identity; short-
lived Anthropic bearer tokens. The identity endpoints are tests/lib/fake_auth.py; each provider
fake accepts only the tokens it was told about, so a request with the wrong credential fails."""
import json
import os
import stat
import subprocess

import pytest

from conftest import unique, write_config
from bfs import anthropic_requests, read_status, wait_results, wait_state
from fake_auth import FakeAuth
from mount import wait_for
from test_90_vertex import authorized_user_file, section as vertex_section, vrequests

SA = "target-sa@p.iam.gserviceaccount.com"
# Distinctive, so a leak anywhere is found by a plain byte search.
SUBJECT = "eyJhbGciOiJSUzI1NiJ9.subject-token-batchfs-test-5c2e.sig"
APP_SECRET = "app-service-identity-header-batchfs-test-91d0"


@pytest.fixture
def fake_auth():
    servers = []

    def make(**kw):
        srv = FakeAuth(**kw).start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()


def submit(m, body, remote):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    return d


def google_env(home, **extra):
    """No gcloud credentials anywhere: a fresh HOME and no ADC variables."""
    env = {"HOME": str(home), "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": "",
           "GCE_METADATA_HOST": "", "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "",
           "GOOGLE_CLOUD_QUOTA_PROJECT": ""}
    env.update(extra)
    return env


def hdr(r, name):
    """A logged request's header, by name in any case."""
    return next((v for k, v in r["headers"].items() if k.lower() == name.lower()), None)


def api_requests(srv):
    return [r for r in srv.requests if not r["path"].startswith("/token")
            and not r["path"].startswith("/_control")]


def everything_under(path):
    """Every byte of every file below path (the cache, the log)."""
    out = b""
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    out += fh.read()
    return out


def assert_no_leak(m, secrets):
    log = m.read_log().encode()
    cache = everything_under(m.cache)
    for s in secrets:
        assert s.encode() not in log, "a secret is in the log"
        assert s.encode() not in cache, "a secret is in the cache"


def vertex_whole_life(m, srv):
    d = submit(m, vrequests(["a", "b"]), "v")
    wait_results(d, timeout=40)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["a.json", "b.json"]
    assert srv.stats["unauthenticated"] == 0
    return d


# --- Google: the metadata server -----------------------------------------------------------

def test_vertex_uses_the_metadata_server_when_no_credentials_file_is_found(
        fake_server, fake_auth, mount_factory, tmp_path):
    srv = fake_server("vertex")
    meta = fake_auth(register=srv.add_token)
    home = tmp_path / "home"
    home.mkdir()
    host = meta.url[len("http://"):]
    m = mount_factory({"v": vertex_section(srv)}, env=google_env(home, GCE_METADATA_HOST=host))
    vertex_whole_life(m, srv)
    calls = [r for r in meta.requests if "computeMetadata" in r["path"]]
    assert calls and all(hdr(r, "Metadata-Flavor") == "Google" for r in calls)
    # The token is cached: one fetch serves the whole batch.
    assert meta.stats["metadata"] == 1
    toks = meta.tokens("metadata")
    assert all(hdr(r, "Authorization") == f"Bearer {toks[0]}"
               for r in api_requests(srv))
    assert_no_leak(m, toks)


def test_a_metadata_token_is_refreshed_before_it_expires(fake_server, fake_auth, mount_factory,
                                                         tmp_path):
    srv = fake_server("vertex")
    # 4 s tokens: batchfs refreshes at 3/4 of such a short life, before any 401.
    meta = fake_auth(register=srv.add_token, token_lifetime=4)
    home = tmp_path / "home"
    home.mkdir()
    m = mount_factory({"v": vertex_section(srv, poll_interval="0.5")},
                      env=google_env(home, GCE_METADATA_HOST=meta.url[7:]))
    d = submit(m, vrequests(["a"]), "v")
    wait_for(lambda: meta.stats["metadata"] >= 3, 20, what="two refreshes")
    assert srv.stats["unauthenticated"] == 0
    assert read_status(d)["error"] is None


def test_without_credentials_or_metadata_server_the_mount_fails_with_advice(
        batchfs_bin, fake_server, fake_auth, tmp_path):
    srv = fake_server("vertex")
    meta = fake_auth()
    meta.add_fault(path="computeMetadata", action="status", status=404, body="Not Found")
    (tmp_path / "m").mkdir()
    (tmp_path / "home").mkdir()
    write_config(tmp_path / "cfg", {"v": vertex_section(srv)})
    env = dict(os.environ, **google_env(tmp_path / "home", GCE_METADATA_HOST=meta.url[7:]))
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30,
                       env=env)
    assert r.returncode != 0
    assert "no Google credentials" in r.stderr and "metadata server" in r.stderr
    assert meta.count("GET", "computeMetadata") == 1  # one try, no retries at mount


# --- Google: workload identity federation --------------------------------------------------

def external_file(path, meta, source, impersonate=True, **extra):
    doc = {"type": "external_account", "audience": meta.config["audience"],
           "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
           "token_url": f"{meta.url}/v1/token", "credential_source": source}
    if impersonate:
        doc["service_account_impersonation_url"] = (
            f"{meta.url}/v1/projects/-/serviceAccounts/{SA}:generateAccessToken")
    doc.update(extra)
    path.write_text(json.dumps(doc))
    return str(path)


def test_external_account_file_source_with_impersonation_and_quota_project(
        fake_server, fake_auth, mount_factory, tmp_path):
    srv = fake_server("vertex")
    # Federated tokens are not accepted by the API: only the impersonated account's are.
    meta = fake_auth(register=srv.add_token, subjects=[SUBJECT], federated_valid=False,
                     service_accounts=[SA])
    home = tmp_path / "home"
    home.mkdir()
    (home / "subject.jwt").write_text(SUBJECT)
    creds = external_file(home / "ext.json", meta, {"file": str(home / "subject.jwt")},
                          quota_project_id="billing-project")
    m = mount_factory({"v": vertex_section(srv, credentials=creds)}, env=google_env(home))
    vertex_whole_life(m, srv)
    form = meta.sts_forms[0]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert "https://www.googleapis.com/auth/cloud-platform" in form["scope"].split()
    assert meta.generate_bodies[0]["email"] == SA
    assert meta.generate_bodies[0]["lifetime"] == "3600s"
    assert meta.stats["sts"] == 1 and meta.stats["generate"] == 1
    imp = meta.tokens("generate")[0]
    for r in api_requests(srv):
        assert hdr(r, "Authorization") == f"Bearer {imp}"
        assert hdr(r, "x-goog-user-project") == "billing-project"
    assert_no_leak(m, [SUBJECT, imp] + meta.tokens("sts"))


def test_external_account_url_source_json_format_without_impersonation(
        fake_server, fake_auth, mount_factory, tmp_path):
    srv = fake_server("vertex")
    meta = fake_auth(register=srv.add_token, subjects=[SUBJECT],
                     subject_text={"access_token": SUBJECT, "other": "x"},
                     subject_headers={"Metadata": "True"})
    home = tmp_path / "home"
    home.mkdir()
    creds = external_file(home / "ext.json", meta, {
        "url": f"{meta.url}/subject", "headers": {"Metadata": "True"},
        "format": {"type": "json", "subject_token_field_name": "access_token"}},
        impersonate=False)
    m = mount_factory({"v": vertex_section(srv, credentials=creds)},
                      env=google_env(home, GOOGLE_CLOUD_QUOTA_PROJECT="env-quota"))
    vertex_whole_life(m, srv)
    assert meta.stats["subject"] == 1 and meta.stats["sts"] == 1 and meta.stats["generate"] == 0
    fed = meta.tokens("sts")[0]
    for r in api_requests(srv):
        assert hdr(r, "Authorization") == f"Bearer {fed}"
        assert hdr(r, "x-goog-user-project") == "env-quota"
    assert_no_leak(m, [SUBJECT, fed])


def executable_source(home, meta):
    """A program as Google's executable-sourced credentials describe: it is told the
    audience and prints the version 1 response."""
    exe = home / "subject.sh"
    exe.write_text("#!/bin/sh\n"
                   f'[ "$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE" = "{meta.config["audience"]}" ] '
                   "|| exit 3\n"
                   '[ "$GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE" = 0 ] || exit 4\n'
                   # The daemon's other secrets never reach a command's environment.
                   '[ -z "$ANTHROPIC_API_KEY$IDENTITY_HEADER" ] || exit 5\n'
                   "echo \"run\" >> \"$(dirname \"$0\")/runs\"\n"
                   "cat <<EOF\n"
                   '{"version": 1, "success": true,\n'
                   ' "token_type": "urn:ietf:params:oauth:token-type:id_token",\n'
                   f' "id_token": "{SUBJECT}",\n'
                   ' "expiration_time": $(($(date +%s) + 3600))}\n'
                   "EOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"executable": {"command": str(exe), "timeout_millis": 10000}}


def test_an_executable_source_needs_googles_explicit_opt_in(batchfs_bin, fake_server,
                                                            fake_auth, tmp_path):
    srv = fake_server("vertex")
    meta = fake_auth(register=srv.add_token, subjects=[SUBJECT], service_accounts=[SA])
    home = tmp_path / "home"
    home.mkdir()
    creds = external_file(home / "ext.json", meta, executable_source(home, meta))
    (tmp_path / "m").mkdir()
    write_config(tmp_path / "cfg", {"v": vertex_section(srv, credentials=creds)})
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **google_env(home)))
    assert r.returncode != 0
    assert "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1" in r.stderr
    assert not (home / "runs").exists()


def test_an_executable_source_runs_when_allowed(fake_server, fake_auth, mount_factory,
                                                tmp_path):
    srv = fake_server("vertex")
    meta = fake_auth(register=srv.add_token, subjects=[SUBJECT], federated_valid=False,
                     service_accounts=[SA])
    home = tmp_path / "home"
    home.mkdir()
    creds = external_file(home / "ext.json", meta, executable_source(home, meta))
    m = mount_factory({"v": vertex_section(srv, credentials=creds)},
                      env=google_env(home, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES="1",
                                     ANTHROPIC_API_KEY="sk-ant-not-for-commands",
                                     IDENTITY_HEADER=APP_SECRET))
    vertex_whole_life(m, srv)
    assert (home / "runs").read_text() == "run\n"
    assert meta.stats["generate"] == 1
    assert_no_leak(m, [SUBJECT] + meta.tokens("generate"))


# --- Google: impersonated_service_account ---------------------------------------------------

def test_impersonated_service_account_trades_the_source_token(fake_server, fake_auth,
                                                               mount_factory, tmp_path):
    srv = fake_server("vertex")
    home = tmp_path / "home"
    home.mkdir()
    user = json.loads(open(authorized_user_file(home / "user.json", srv)).read())
    # The source (an authorized_user) gets its token from the fake's /token; only
    # generateAccessToken's tokens are registered with the API.
    meta = fake_auth(service_accounts=[SA], trust=lambda t: t in srv.tokens_issued)
    srv_tokens_before = set(srv.tokens)
    meta.register = srv.add_token
    creds = home / "imp.json"
    creds.write_text(json.dumps({
        "type": "impersonated_service_account",
        "service_account_impersonation_url":
            f"{meta.url}/v1/projects/-/serviceAccounts/{SA}:generateAccessToken",
        "delegates": [], "source_credentials": user, "quota_project_id": "imp-quota"}))
    m = mount_factory({"v": vertex_section(srv, credentials=str(creds))}, env=google_env(home))
    vertex_whole_life(m, srv)
    assert srv.stats["refresh_grants"] == 1 and meta.stats["generate"] == 1
    imp = meta.tokens("generate")[0]
    assert imp not in srv_tokens_before
    gen = [r for r in meta.requests if "generateAccessToken" in r["path"]][0]
    assert hdr(gen, "Authorization") == f"Bearer {srv.tokens_issued[0]}"
    for r in api_requests(srv):
        assert hdr(r, "Authorization") == f"Bearer {imp}"
        assert hdr(r, "x-goog-user-project") == "imp-quota"
    assert_no_leak(m, [imp, srv.tokens_issued[0], user["refresh_token"]])


# --- Azure: managed identity ----------------------------------------------------------------

def azure_section(az, **extra):
    s = {"provider": "azure", "endpoint": az.url, "auth": "managed_identity",
         "poll_interval": "0.2", "list_interval": "0.5", "min_poll_interval": "0"}
    s.update(extra)
    return s


def azure_line(cid):
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/chat/completions",
                       "body": {"model": "gpt-4o-mini-batch",
                                "messages": [{"role": "user", "content": cid}]}})


def azure_whole_life(m, az, remote="z"):
    d = submit(m, azure_line("a") + "\n" + azure_line("b") + "\n", remote)
    wait_state(d, "completed", timeout=30)
    wait_results(d)
    assert sorted(os.listdir(os.path.join(d, "results"))) == ["a.json", "b.json"]
    assert all(r["status"] != 401 for r in az.requests)
    return d


def test_azure_managed_identity_from_the_instance_metadata_endpoint(fake_server, fake_auth,
                                                                    mount_factory):
    az = fake_server("azure", tokens=[])
    imds = fake_auth(register=lambda t, life: az.config["tokens"].append(t),
                     azure_client_id="11111111-2222-3333-4444-555555555555")
    m = mount_factory({"z": azure_section(
        az, identity_endpoint=f"{imds.url}/metadata/identity/oauth2/token",
        managed_identity_client_id="11111111-2222-3333-4444-555555555555")},
        env={"IDENTITY_ENDPOINT": "", "IDENTITY_HEADER": "", "AZURE_OPENAI_API_KEY": ""})
    azure_whole_life(m, az)
    calls = [r for r in imds.requests if r["path"] == "/metadata/identity/oauth2/token"]
    assert len(calls) == 1 and hdr(calls[0], "Metadata") == "true"
    assert "api-version=2018-02-01" in calls[0]["query"]
    tok = imds.tokens("imds")[0]
    for r in az.requests:
        if r["path"].startswith("/openai/"):
            assert hdr(r, "Authorization") == f"Bearer {tok}"
            assert hdr(r, "api-key") is None
    assert_no_leak(m, [tok])


def test_azure_managed_identity_on_app_service(fake_server, fake_auth, mount_factory):
    az = fake_server("azure", tokens=[])
    imds = fake_auth(register=lambda t, life: az.config["tokens"].append(t),
                     identity_header=APP_SECRET)
    m = mount_factory({"z": azure_section(az)},
                      env={"IDENTITY_ENDPOINT": f"{imds.url}/msi/token",
                           "IDENTITY_HEADER": APP_SECRET})
    azure_whole_life(m, az)
    assert imds.stats["appservice"] == 1 and imds.stats["imds"] == 0
    assert_no_leak(m, [APP_SECRET] + imds.tokens("appservice"))


def test_azure_managed_identity_token_is_fetched_again_after_a_401(fake_server, fake_auth,
                                                                   mount_factory):
    az = fake_server("azure", tokens=[])
    imds = fake_auth(register=lambda t, life: az.config["tokens"].append(t))
    m = mount_factory({"z": azure_section(
        az, identity_endpoint=f"{imds.url}/metadata/identity/oauth2/token")})
    az.config["tokens"].clear()  # revoked early
    d = submit(m, azure_line("a") + "\n", "z")
    wait_state(d, "completed", timeout=30)
    assert imds.stats["imds"] == 2


def test_azure_managed_identity_waits_out_imds_410_while_it_updates(fake_server, fake_auth,
                                                                    mount_factory):
    az = fake_server("azure", tokens=[])
    imds = fake_auth(register=lambda t, life: az.config["tokens"].append(t))
    # "IMDS is being updated": 410 Gone, to be retried for up to 70 s.
    imds.add_fault(path="/metadata/identity", action="status", status=410, times=2,
                   body={"error": "unknown", "error_description": "IMDS is being updated"})
    m = mount_factory({"z": azure_section(
        az, identity_endpoint=f"{imds.url}/metadata/identity/oauth2/token")})
    assert imds.count("GET", "/metadata/identity") == 3 and imds.stats["imds"] == 1
    azure_whole_life(m, az)


# --- Anthropic: short-lived bearer tokens ---------------------------------------------------

def bearer_command(home, json_out):
    """A command that mints a new token on each run (and registers it with the fake)."""
    n = home / "n"
    n.write_text("0")
    script = home / "mint.py"
    script.write_text(
        "import json, os\n"
        f"n = int(open({str(n)!r}).read()) + 1\n"
        f"open({str(n) + '.tmp'!r}, 'w').write(str(n))\n"
        f"os.replace({str(n) + '.tmp'!r}, {str(n)!r})  # the test reads it meanwhile\n"
        "tok = f'anthropic-oauth-batchfs-test-{n}'\n"
        f"print(json.dumps({{'access_token': tok, 'expires_in': 3600}}) if {json_out} "
        "else tok)\n")
    return f"/usr/bin/python3 {script}", n


def test_anthropic_bearer_token_from_the_key_command(fake_server, mount_factory, tmp_path):
    srv = fake_server("anthropic", processing_s=0.3, bearer_only=True)
    home = tmp_path / "home"
    home.mkdir()
    for i in range(1, 4):
        srv.add_bearer_token(f"anthropic-oauth-batchfs-test-{i}")
    cmd, n = bearer_command(home, True)
    m = mount_factory({"a": {"provider": "anthropic", "base_url": srv.url, "auth": "bearer",
                             "api_key_command": cmd, "poll_interval": "0.2",
                             "list_interval": "0.5"}})
    d = submit(m, anthropic_requests(2), "a")
    wait_results(d)
    assert n.read_text() == "1"  # one token served the whole batch
    api = [r for r in srv.requests if r["path"].startswith("/v1/")]
    assert api and all(hdr(r, "Authorization") ==
                       "Bearer anthropic-oauth-batchfs-test-1" and
                       hdr(r, "x-api-key") is None for r in api)
    # Revoked early: the next call gets a 401, runs the command again and succeeds.
    del srv.bearer_tokens["anthropic-oauth-batchfs-test-1"]
    d2 = submit(m, anthropic_requests(1, prefix="x"), "a")
    wait_results(d2)
    assert n.read_text() == "2"
    assert_no_leak(m, ["anthropic-oauth-batchfs-test-1", "anthropic-oauth-batchfs-test-2"])


def test_anthropic_plain_bearer_token_is_renewed_every_token_ttl(fake_server, mount_factory,
                                                                 tmp_path):
    srv = fake_server("anthropic", processing_s=0.3, bearer_only=True)
    home = tmp_path / "home"
    home.mkdir()
    for i in range(1, 50):
        srv.add_bearer_token(f"anthropic-oauth-batchfs-test-{i}")
    cmd, n = bearer_command(home, False)
    m = mount_factory({"a": {"provider": "anthropic", "base_url": srv.url, "auth": "bearer",
                             "api_key_command": cmd, "token_ttl": "1", "poll_interval": "0.2",
                             "list_interval": "0.3"}})
    wait_for(lambda: int(n.read_text()) >= 3, 15, what="the command to run again")
    assert srv.bearer_refused == 0


def test_anthropic_bearer_needs_a_command(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    write_config(tmp_path / "cfg", {"a": {"provider": "anthropic",
                                          "base_url": "http://127.0.0.1:9", "auth": "bearer",
                                          "api_key_env": "X"}})
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "api_key_command" in r.stderr
