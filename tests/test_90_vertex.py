"""provider = vertex against the fake Vertex AI, Cloud Storage and OAuth server
(tests/lib/fake_vertex.py)."""
import base64
import errno
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import unique, write_config
from bfs import read_status, wait_results, wait_state
from mount import wait_for

EMAIL = "batchfs-test@p.iam.gserviceaccount.com"
# Distinctive, so a leak anywhere is found by a plain byte search.
REFRESH_TOKEN = "1//0gRefReshT0ken-batchfs-test-QmV0dGVyTm90TGVhaw"
CLIENT_SECRET = "GOCSPX-batchfs-test-client-secret-7f3a9c"
COMMAND_TOKEN = "ya29.command-token-batchfs-test-4b1d"


def vline(custom_id, text="hello", **request):
    r = {"messages": [{"role": "user", "content": text}],
         "anthropic_version": "vertex-2023-10-16", "max_tokens": 16}
    r.update(request)
    return json.dumps({"custom_id": custom_id, "request": r}, separators=(",", ":"))


def vrequests(ids, **request):
    return "".join(vline(c, f"text {c}", **request) + "\n" for c in ids)


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


@pytest.fixture(scope="module")
def sa_key(tmp_path_factory):
    """A fresh RSA key pair, as `gcloud iam service-accounts keys create` would give."""
    d = tmp_path_factory.mktemp("sa")
    key, pub = d / "key.pem", d / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    return key.read_text(), pub.read_text()


def service_account_file(path, srv, sa_key):
    srv.add_service_account(EMAIL, sa_key[1])
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "0123456789abcdef",
        "private_key": sa_key[0], "client_email": EMAIL, "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": f"{srv.url}/token"}))
    return str(path)


def authorized_user_file(path, srv):
    srv.add_authorized_user("1234.apps.googleusercontent.com", CLIENT_SECRET, REFRESH_TOKEN)
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "1234.apps.googleusercontent.com",
        "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN,
        "token_uri": f"{srv.url}/token"}))
    return str(path)


def section(srv, **keys):
    s = {"provider": "vertex", "project": "p", "location": "us-east5", "bucket": "b",
         "model": "claude-3-5-haiku@20241022", "aiplatform_url": srv.url,
         "storage_url": srv.url, "bigquery_url": srv.url, "poll_interval": "0.2",
         "list_interval": "0.5"}
    s.update({k: str(v) for k, v in keys.items() if v is not None})
    for k in [k for k, v in keys.items() if v is None]:
        s.pop(k, None)
    return s


@pytest.fixture
def vertex(fake_server, mount_factory, tmp_path, sa_key):
    """vertex(fake_config=None, creds=KIND, opts=(), **keys) -> (srv, mount): a fake and a
    mount with one remote 'v' (keys: its config; opts: extra -o options). creds:
    "service_account" (credentials = a key file), "authorized_user" (found through
    GOOGLE_APPLICATION_CREDENTIALS), "command" (access_token_command), None. HOME is a fresh
    directory, so no real gcloud credentials are ever picked up."""
    def make(fake_config=None, creds="service_account", opts=(), **keys):
        srv = fake_server("vertex", **(fake_config or {}))
        home = tmp_path / unique("home")
        home.mkdir()
        env = {"HOME": str(home), "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": ""}
        if creds == "service_account":
            keys.setdefault("credentials", service_account_file(home / "sa.json", srv, sa_key))
        elif creds == "authorized_user":
            env["GOOGLE_APPLICATION_CREDENTIALS"] = authorized_user_file(home / "adc.json", srv)
        elif creds == "command":
            srv.add_token(COMMAND_TOKEN)
            (home / "token").write_text(COMMAND_TOKEN + "\n")
            keys.setdefault("access_token_command", f"cat {home}/token")
        m = mount_factory({"v": section(srv, **keys)}, env=env, name=unique("mnt"),
                          extra_opts=opts)
        return srv, m
    return make


def submit(m, body, remote="v"):
    d = os.path.join(m.path, remote, unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(body)
    return d


def assert_results_match_fake(d, srv, ids, foreign=False):
    """results/ holds the predictions lines the fake wrote, byte for byte, one per custom_id;
    results.jsonl has them in request order (ids), or for a job made elsewhere in the order
    Vertex wrote them."""
    job = srv.job(read_status(d)["id"])
    bucket, base = job.output_dir()[5:].split("/", 1)
    lines = []
    for (b, name), obj in sorted(srv.objects.items()):
        if b == bucket and name.startswith(base + "/") and name.endswith(".jsonl"):
            lines += [ln for ln in obj["data"].split(b"\n") if ln]
    by_id = {json.loads(ln)["custom_id"]: ln for ln in lines}
    assert sorted(by_id) == sorted(ids)
    assert sorted(os.listdir(os.path.join(d, "results"))) == sorted(c + ".json" for c in ids)
    for c in ids:
        assert read(os.path.join(d, "results", c + ".json")) == by_id[c] + b"\n"
    order = lines if foreign else [by_id[c] for c in ids]
    assert read(os.path.join(d, "results.jsonl")) == b"".join(ln + b"\n" for ln in order)


def assert_no_secret(m, secrets):
    """Nothing secret in the daemon's argv, its log, the cache or anything the mount shows."""
    secrets = [s.encode() for s in secrets if s]
    places = {"argv": read(f"/proc/{m.pid}/cmdline"), "log": read(m.log)}
    for root, _, files in os.walk(m.cache):
        for f in files:
            places[os.path.join(root, f)] = read(os.path.join(root, f))
    for root, _, files in os.walk(m.path):
        for f in files:
            p = os.path.join(root, f)
            if os.access(p, os.R_OK):
                places[p] = read(p)
    for where, data in places.items():
        for s in secrets:
            assert s not in data, f"a secret ({s[:12]!r}...) reached {where}"


def pem_body_lines(pem):
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]


# --- the fake speaks the spec (so the tests below mean something) -----------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_grant(srv, key_file, claims):
    """POSTs a jwt-bearer grant signed (with the openssl command) by key_file."""
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file],
                         input=f"{head}.{body}".encode(), capture_output=True,
                         check=True).stdout
    form = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": f"{head}.{body}.{b64url(sig)}"})
    rq = urllib.request.Request(f"{srv.url}/token", data=form.encode(), method="POST",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(rq, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_fake_checks_the_jwt_signature_and_claims(fake_server, sa_key, tmp_path):
    srv = fake_server("vertex")
    srv.add_service_account(EMAIL, sa_key[1])
    good, other = tmp_path / "good.pem", tmp_path / "other.pem"
    good.write_text(sa_key[0])
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(other)], check=True, capture_output=True)
    now = int(time.time())
    claims = {"iss": EMAIL, "aud": f"{srv.url}/token", "iat": now, "exp": now + 3600,
              "scope": "https://www.googleapis.com/auth/cloud-platform"}
    status, body = token_grant(srv, str(good), claims)
    assert status == 200 and body["token_type"] == "Bearer"
    assert body["access_token"].startswith("ya29.") and body["expires_in"] == 3600
    status, body = token_grant(srv, str(other), claims)
    assert (status, body) == (400, {"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."})
    status, body = token_grant(srv, str(good), dict(claims, exp=now + 7200))
    assert status == 400 and "short-lived" in body["error_description"]
    status, body = token_grant(srv, str(good), dict(claims, aud="https://elsewhere/token"))
    assert status == 400 and "aud" in body["error_description"]


def test_fake_requires_a_live_token(fake_server):
    srv = fake_server("vertex")
    srv.add_token("ya29.short", lifetime=0.2)
    url = f"{srv.url}/v1/projects/p/locations/us-east5/batchPredictionJobs"

    def get(token):
        rq = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(rq, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    assert get("ya29.short") == (200, {})
    srv.advance(1)
    status, body = get("ya29.short")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    assert body["error"]["code"] == 401


# --- through the mount ------------------------------------------------------------------------

@pytest.mark.parametrize("resumable", [False, True], ids=["media", "resumable"])
def test_a_file_over_max_bytes_goes_in_parts_each_its_own_object_and_job(vertex, resumable):
    keys = {"resumable_threshold": 1, "upload_chunk_size": 256 * 1024} if resumable else {}
    ids = [f"req-{i}" for i in range(6)]
    lines = [vline(c, f"text {c} " + "x" * 300) + "\n" for c in ids]
    srv, m = vertex(max_bytes=2 * len(lines[0]) + 1, **keys)
    body = "".join(lines)
    d = submit(m, body)
    s = read_status(d)
    assert [(p["first_line"], p["last_line"]) for p in s["parts"]] == [(1, 2), (3, 4), (5, 6)]
    assert len(srv.create_bodies) == 3
    for k, create in enumerate(srv.create_bodies):
        ident = create["labels"]["batchfs_identity"]
        assert create["labels"]["batchfs_requests"] == "2"
        assert srv.object("b", f"batchfs/{ident}/requests.jsonl") == \
            "".join(lines[2 * k:2 * k + 2]).encode()
    s = wait_results(d, timeout=40)
    assert s["state"] == "completed" and s["counts"]["succeeded"] == 6
    got = [json.loads(x)["custom_id"] for x in read(os.path.join(d, "results.jsonl")).splitlines()]
    assert got == ids


def test_whole_life_with_a_service_account_key(vertex, sa_key):
    srv, m = vertex(opts=("debug", "debug_fuse"))  # the most the log ever says
    ids = [f"req-{i}" for i in range(5)]
    body = vrequests(ids[:3]) + vline(ids[3], "please fail-me") + "\n" + vrequests(ids[4:])
    d = submit(m, body)
    s = read_status(d)
    assert s["provider"] == "vertex"
    assert s["state"] in ("validating", "in_progress")
    assert s["provider_state"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
    assert s["id"].isdigit() and s["counts"]["total"] == 5
    assert os.readlink(os.path.join(m.path, "v", ".by-id", s["id"])) == "../" + os.path.basename(d)
    assert read(os.path.join(d, "requests.jsonl"), "r") == body

    # What went over the wire: the upload and the job, in Vertex's own terms.
    [create] = srv.create_bodies
    ident = create["labels"]["batchfs_identity"]
    assert ident.startswith("bfs-") and create["labels"]["batchfs_requests"] == "5"
    assert create["displayName"].startswith(os.path.basename(d) + " ")
    assert create["displayName"].endswith(ident)
    assert create["model"] == "publishers/anthropic/models/claude-3-5-haiku@20241022"
    assert create["inputConfig"] == {"instancesFormat": "jsonl", "gcsSource": {
        "uris": [f"gs://b/batchfs/{ident}/requests.jsonl"]}}
    assert create["outputConfig"] == {"predictionsFormat": "jsonl", "gcsDestination": {
        "outputUriPrefix": f"gs://b/batchfs/{ident}/output"}}
    assert srv.object("b", f"batchfs/{ident}/requests.jsonl") == body.encode()
    assert srv.stats["media_uploads"] == 1 and srv.stats["resumable_sessions"] == 0
    assert srv.stats["jwt_grants"] >= 1 and srv.stats["bad_grants"] == 0

    s = wait_state(d, "completed")
    assert s["provider_state"] == "JOB_STATE_SUCCEEDED"
    assert s["counts"] == {"total": 5, "processing": 0, "succeeded": 4, "errored": 1,
                           "canceled": 0, "expired": 0}
    assert s["ended_at"].endswith("Z") and s["error"] is None
    wait_results(d)
    assert_results_match_fake(d, srv, ids)
    bad = json.loads(read(os.path.join(d, "results", "req-3.json")))
    assert bad["status"].startswith("Bad Request") and "response" not in bad
    good = json.loads(read(os.path.join(d, "results", "req-0.json")))
    assert good["status"] == "" and good["response"]["type"] == "message"
    assert srv.jobs_created == 1
    assert_no_secret(m, pem_body_lines(sa_key[0]) + srv.tokens_issued)


@pytest.mark.parametrize("body, line, word", [
    (vline("a", anthropic_version="bedrock-2023-05-31") + "\n", 1, "anthropic_version"),
    (json.dumps({"custom_id": "a", "request": {"messages": [], "max_tokens": 4}}) + "\n", 1,
     "anthropic_version"),
    (vline("a") + "\n\n" + vline("a") + "\n", 3, "duplicate custom_id 'a' (first on line 1)"),
    (vline("a", model="claude-x@1") + "\n" + vline("b", model="claude-y@1") + "\n", 2,
     "one model"),
    (vline("a", max_tokens=0) + "\n", 1, "request.max_tokens"),
    ('{"custom_id": "a", "params": {}}\n', 1, "request is missing"),
], ids=["bedrock-version", "no-version", "duplicate", "mixed-models", "max-tokens", "anthropic"])
def test_invalid_lines_are_rejected_before_anything_is_sent(vertex, body, line, word):
    srv, m = vertex()
    d = os.path.join(m.path, "v", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(body)
    assert e.value.errno == errno.EINVAL
    s = read_status(d)
    assert s["state"] == "rejected" and s["error"]["line"] == line
    assert word in s["error"]["message"]
    assert srv.count(path="/upload/") == 0 and srv.jobs_created == 0


def test_request_model_in_the_lines_chooses_the_job_model(vertex):
    srv, m = vertex(model=None)
    d = submit(m, vrequests(["a", "b"], model="claude-3-7-sonnet@20250219"))
    assert read_status(d)["state"] in ("validating", "in_progress")
    assert srv.create_bodies[0]["model"] == \
        "publishers/anthropic/models/claude-3-7-sonnet@20250219"


def test_no_model_anywhere_fails_the_submission(vertex):
    srv, m = vertex(model=None)
    m.expect_log(r"no model")
    d = os.path.join(m.path, "v", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(vrequests(["a"]))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and "model" in s["error"]["message"]
    assert srv.jobs_created == 0


def test_resumable_upload_in_chunks_resumes_after_a_cut_and_short_acks(vertex):
    # 3.5 chunks of 256 KiB; the fake keeps only one unit of each PUT, and the second PUT's
    # connection dies after the fake took the bytes: both must be resumed from the Range.
    srv, m = vertex({"persist_max": 256 * 1024}, resumable_threshold=1,
                    upload_chunk_size=2 * 256 * 1024)
    pad = "x" * 900
    ids = [f"r{i:04d}" for i in range(960)]
    body = vrequests(ids, system=pad)
    assert 3 * 256 * 1024 < len(body) < 4 * 256 * 1024
    srv.add_fault(method="PUT", path="/upload/", action="drop_after")
    srv.add_fault(method="PUT", path="/upload/", action="status", status=503)
    d = submit(m, body)
    ident = srv.create_bodies[0]["labels"]["batchfs_identity"]
    assert srv.object("b", f"batchfs/{ident}/requests.jsonl") == body.encode()
    assert srv.stats["media_uploads"] == 0 and srv.stats["resumable_sessions"] == 1
    assert srv.stats["status_queries"] >= 1 and srv.stats["chunks"] >= 4
    wait_state(d, "completed")
    s = wait_results(d)
    assert s["counts"]["succeeded"] == 960


@pytest.mark.parametrize("shards", [1, 2], ids=["one-file", "second-of-two-files"])
def test_a_results_download_cut_short_starts_over_without_duplicates(vertex, shards):
    # The cut comes after whole lines were delivered: within the first file the lines so far
    # are dropped and the file is fetched again; in a later file the whole pass starts over.
    srv, m = vertex({"output_shards": shards, "media_chunk": 512})
    ids = [f"q{i}" for i in range(8)]
    d = submit(m, vrequests(ids))
    name = "predictions.jsonl" if shards == 1 else "predictions_0002.jsonl"
    srv.add_fault(method="GET", path=name.replace(".", r"\.") + "$", action="truncate",
                  after=1100)
    wait_state(d, "completed")
    wait_results(d)
    assert_results_match_fake(d, srv, ids)
    assert srv.stats["downloads"] == (2 if shards == 1 else 4)


def test_a_failed_job_shows_its_error(vertex):
    srv, m = vertex(model="claude-fail@20250101")
    d = submit(m, vrequests(["a", "b"]))
    s = wait_state(d, "failed")
    assert s["provider_state"] == "JOB_STATE_FAILED"
    assert "Quota exceeded" in s["error"]["message"]
    s = wait_for(lambda: (lambda x: x if x["results"] == "unavailable" else None)(
        read_status(d)), 10, what="results unavailable")
    assert not os.path.exists(os.path.join(d, "results"))
    assert srv.jobs_created == 1


def test_cancel_through_ctl(vertex):
    srv, m = vertex({"running_s": 30, "pending_s": 0.2})
    d = submit(m, vrequests([f"c{i}" for i in range(20)]))
    wait_for(lambda: read_status(d)["provider_state"] == "JOB_STATE_RUNNING", 10,
             what="job running")
    wait_for(lambda: srv.job(read_status(d)["id"]).finished(srv.now()) >= 1, 10,
             what="a request done")
    # Vertex writes no results for a cancelled job: `cancel!` accepts that (test_91 has the
    # refusal of a plain `cancel`).
    subprocess.run(["sh", "-c", f"echo 'cancel!' > {d}/ctl"], check=True)
    s = read_status(d)
    assert s["state"] in ("canceling", "canceled")
    assert srv.count("POST", r":cancel$") == 1
    s = wait_state(d, "canceled")
    assert s["provider_state"] == "JOB_STATE_CANCELLED"
    assert s["counts"]["canceled"] >= 1 and s["counts"]["processing"] == 0
    assert "no results" in s["error"]["message"]
    s = wait_for(lambda: (lambda x: x if x["results"] == "unavailable" else None)(
        read_status(d)), 10, what="results unavailable")
    assert not os.path.exists(os.path.join(d, "results"))


def test_a_token_that_expires_mid_batch_is_refreshed_after_a_401(vertex):
    # Tokens really live 0.7 s but claim an hour: batchfs learns it from the 401.
    srv, m = vertex({"token_lifetime": 0.7, "reported_expires_in": 3600, "running_s": 2})
    d = submit(m, vrequests(["a", "b", "c"]))
    wait_state(d, "completed")
    wait_results(d)
    assert srv.stats["unauthenticated"] >= 1
    assert srv.stats["jwt_grants"] >= 2
    assert_results_match_fake(d, srv, ["a", "b", "c"])


def test_authorized_user_credentials_from_the_environment(vertex):
    # ADC lookup: no credentials key; GOOGLE_APPLICATION_CREDENTIALS names an authorized_user
    # file. Honest one-second tokens, expires_in as a string: refreshed before they expire.
    srv, m = vertex({"token_lifetime": 1, "expires_in_as_string": True, "running_s": 2},
                    creds="authorized_user")
    d = submit(m, vrequests(["u1", "u2"]))
    wait_state(d, "completed")
    wait_results(d)
    assert srv.stats["refresh_grants"] >= 2 and srv.stats["jwt_grants"] == 0
    assert srv.stats["bad_grants"] == 0
    assert_no_secret(m, [REFRESH_TOKEN, CLIENT_SECRET] + srv.tokens_issued)


def test_access_token_command(vertex):
    srv, m = vertex(creds="command")
    d = submit(m, vrequests(["k1"]))
    wait_state(d, "completed")
    wait_results(d)
    assert srv.stats["jwt_grants"] == 0 and srv.stats["refresh_grants"] == 0
    assert srv.stats["unauthenticated"] == 0
    assert_no_secret(m, [COMMAND_TOKEN])


def test_jobs_made_elsewhere_appear_with_their_results(vertex):
    # Three jobs, two per listing page: the listing follows nextPageToken.
    srv, m = vertex()
    gemini = srv.create_job(['{"request": {"contents": []}}'], model="gemini-2.0-flash-001",
                            publisher="google")
    first = srv.create_job([vline("x1", "from the console"), vline("x2")])
    second = srv.create_job([vline("y1")])
    dirs = [os.path.join(m.path, "v", j) for j in (first, second)]
    wait_for(lambda: all(os.path.isdir(d) for d in dirs), 10, what="the foreign jobs' dirs")
    # Jobs of other publishers (Gemini) are not this remote's batches.
    assert gemini not in os.listdir(os.path.join(m.path, "v"))
    s = wait_state(dirs[0], "completed")
    assert s["name"] == first and s["id"] == first
    assert s["counts"]["succeeded"] == 2
    wait_results(dirs[0])
    assert_results_match_fake(dirs[0], srv, ["x1", "x2"], foreign=True)
    wait_results(dirs[1])
    assert_results_match_fake(dirs[1], srv, ["y1"], foreign=True)
    assert srv.jobs_created == 3


def test_a_lost_create_answer_is_found_not_sent_twice(vertex):
    srv, m = vertex()
    m.expect_log(r"answer to its creation was lost")
    srv.add_fault(method="POST", path=r"/batchPredictionJobs$", action="drop_after")
    d = submit(m, vrequests(["a", "b"]))
    s = read_status(d)
    assert s["state"] in ("validating", "in_progress") and s["id"].isdigit()
    assert srv.jobs_created == 1
    assert srv.job(s["id"]).body["labels"]["batchfs_identity"].startswith("bfs-")
    wait_state(d, "completed")
    wait_results(d)
    assert srv.jobs_created == 1


def test_a_crash_during_the_create_is_reconciled_at_restart(vertex):
    # The daemon dies while Vertex is still creating the job; the next start finds the job by
    # its identity label and adopts it: one job, never two.
    srv, m = vertex()
    srv.add_fault(method="POST", path=r"/batchPredictionJobs$", action="delay", seconds=1.0)
    d = os.path.join(m.path, "v", unique())
    os.mkdir(d)
    outcome = {}

    def writer():
        try:
            with open(os.path.join(d, "requests.jsonl"), "w") as f:
                f.write(vrequests(["a", "b"]))
        except OSError as e:
            outcome["errno"] = e.errno
    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: srv.count("POST", r"/batchPredictionJobs$") == 1, 10,
             what="the create to reach the fake")
    m.kill()
    t.join(10)
    assert not t.is_alive() and outcome.get("errno") is not None
    wait_for(lambda: srv.jobs_created == 1, 10, what="the job to be created")
    m.start()
    s = wait_state(d, ("validating", "in_progress", "completed"))
    jid = s["id"]
    assert jid in srv.jobs and srv.jobs_created == 1
    wait_state(d, "completed")
    wait_results(d)
    assert srv.jobs_created == 1 and sorted(os.listdir(os.path.join(m.path, "v"))) == \
        [".by-id", os.path.basename(d)]
    assert os.listdir(os.path.join(m.path, "v", ".by-id")) == [jid]


def test_a_refused_upload_fails_the_batch_and_it_may_be_rewritten(vertex):
    srv, m = vertex()
    m.expect_log(r"cannot (submit|upload)")
    srv.add_fault(method="POST", path="/upload/", action="status", status=403,
                  body={"error": {"code": 403, "message": "batchfs@p.iam.gserviceaccount.com "
                                  "does not have storage.objects.create access to the Google "
                                  "Cloud Storage object.", "errors": []}})
    d = os.path.join(m.path, "v", unique())
    os.mkdir(d)
    with pytest.raises(OSError) as e:
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write(vrequests(["a"]))
    assert e.value.errno == errno.EIO
    s = read_status(d)
    assert s["state"] == "failed" and "storage.objects.create" in s["error"]["message"]
    assert srv.jobs_created == 0
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(vrequests(["a"]))
    assert read_status(d)["state"] in ("validating", "in_progress")
    assert srv.jobs_created == 1


@pytest.mark.parametrize("keys, word", [
    ({"bucket": None}, "bucket"),
    ({"location": "global"}, "not 'global'"),
    ({"upload_chunk_size": "1000"}, "262144"),
    ({"credentials": "/nonexistent/creds.json"}, "/nonexistent/creds.json"),
    ({"credentials": None}, "no Google credentials"),
    ({"output": "bigquery"}, "bigquery_dataset = PROJECT.DATASET"),
    ({"output": "bq"}, "output must be gcs or bigquery"),
    ({"max_concurrent_jobs": "-1"}, "max_concurrent_jobs must be a whole number"),
    ({"cancel_confirm": "maybe"}, "cancel_confirm must be on or off"),
    ({"first_job_retry": "soon"}, "first_job_retry"),
], ids=["no-bucket", "global", "chunk-size", "missing-file", "no-credentials", "bq-no-dataset",
        "bad-output", "bad-max-jobs", "bad-cancel-confirm", "bad-first-job-retry"])
def test_bad_config_fails_the_mount(batchfs_bin, fake_server, tmp_path, keys, word):
    srv = fake_server("vertex")
    (tmp_path / "m").mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "creds.json").write_text(json.dumps({"type": "service_account"}))
    keys = dict({"credentials": str(tmp_path / "creds.json")}, **keys)
    write_config(tmp_path / "cfg", {"v": section(srv, **keys)})
    env = dict(os.environ, HOME=str(tmp_path / "home"), GOOGLE_APPLICATION_CREDENTIALS="")
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30,
                       env=env)
    assert r.returncode != 0
    assert word in r.stderr


def test_credentials_of_an_unsupported_type_are_named_without_their_content(
        batchfs_bin, fake_server, tmp_path):
    srv = fake_server("vertex")
    (tmp_path / "m").mkdir()
    (tmp_path / "ext.json").write_text(json.dumps({
        "type": "external_account", "subject_token_type": "x", "secret": CLIENT_SECRET}))
    write_config(tmp_path / "cfg", {"v": section(srv, credentials=tmp_path / "ext.json")})
    r = subprocess.run([batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "external_account" in r.stderr and CLIENT_SECRET not in r.stderr
