"""A fake Vertex AI batch prediction service for Claude, with Cloud Storage and Google's OAuth2
token endpoint on the same server
(https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch).
Standard library only, plus the `openssl` command for checking RS256 signatures.

  POST   /v1/projects/P/locations/L/batchPredictionJobs             create (C.2, C.3)
  GET    /v1/projects/P/locations/L/batchPredictionJobs             list: pageSize, pageToken
  GET    /v1/projects/P/locations/L/batchPredictionJobs/ID          get
  POST   /v1/projects/P/locations/L/batchPredictionJobs/ID:cancel   {} (asynchronous)
  DELETE /v1/projects/P/locations/L/batchPredictionJobs/ID          LRO; finished jobs only
  POST   /upload/storage/v1/b/B/o?uploadType=media|resumable&name=N  upload (C.9)
  PUT    /upload/storage/v1/b/B/o?upload_id=U                        resumable chunk / status
  GET    /storage/v1/b/B/o?prefix=&pageToken=&maxResults=            objects list
  GET    /storage/v1/b/B/o/NAME[?alt=media]                          metadata / bytes (streamed)
  DELETE /storage/v1/b/B/o/NAME
  POST   /token                                                      OAuth2 token endpoint (C.8)

Proto3 JSON as the spec says (C.1): lowerCamelCase, int64 as strings, RFC 3339 times with 6
fractional digits, empty fields omitted. Errors use Google's envelope {"error": {"code",
"message", "status"}} (Cloud Storage adds "errors": [...]); the token endpoint answers OAuth's
{"error", "error_description"}.

Time is lazy: a job is QUEUED for `queued_s`, PENDING for `pending_s`, RUNNING for `running_s`
(its requests finish one by one in a shuffled order), then SUCCEEDED and its output is written
as `{outputUriPrefix}/prediction-model-{time slightly after createTime}/predictions.jsonl` (or
`predictions_0001.jsonl`... with `output_shards` > 1), lines in processing order (the spec: output
order is not guaranteed) or, with `output_order` = "input", in input order. The output lines
of the requests in `no_custom_id` lack their custom_id. A cancel makes
it CANCELLING for `cancel_s`, then CANCELLED; as on Vertex ("due to a known bug, cancelled jobs
write no results") nothing is written for it. A model
whose name contains `fail_model` goes PENDING -> FAILED with an error message; with
`internal_first_job` the first job of a region goes PENDING -> FAILED with code 13 INTERNAL. A request whose
last user message contains `error_marker`, or that is not a valid Claude request, gets an
output line with a non-empty `status` and no `response`. `advance(s)` moves the clock.

Every API route needs `Authorization: Bearer <token>` with a token this server issued and that
has not expired (else 401 UNAUTHENTICATED). Tokens come from /token: the jwt-bearer grant (the
JWT's RS256 signature checked against a registered service account's public key, and its iss,
aud, scope, iat and exp) or the refresh_token grant (registered client and refresh token), or
are registered directly with add_token() (what an access_token_command would print). Issued
tokens really live `token_lifetime` seconds; the answer's expires_in says
`reported_expires_in` (default: the same), so a test can make one expire early.

Test surface beyond the base: add_service_account(email, public_pem), add_authorized_user(
client_id, client_secret, refresh_token), add_token(token, lifetime), create_job(lines, ...)
(as another client would), job(id), jobs_created, object(bucket, name), objects, stats,
tokens_issued, advance(seconds); over HTTP: POST /_control/jobs {"lines", "model"},
GET /_control/stats, POST /_control/advance {"seconds"}.

Quota: at most `max_running` (default 4) unfinished jobs at once; a create beyond is refused
with 429 RESOURCE_EXHAUSTED (stats: quota_refusals, most_running).

BigQuery: a job may read a table (inputConfig bigquerySource, bq://p.d.t) and write one
(outputConfig bigqueryDestination, bq://p.d: a new predictions_<time> table, named in
outputInfo); GET .../tables/T (schema) and .../tables/T/data (tabledata.list, `bq_page_max`
rows a page) read them, POST .../tables inserts one; add_table() is the test surface.

Known gaps ([I] in the spec): list filters are ignored (all jobs are returned), no metadata
server.
"""
import base64
import datetime
import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
import time
import urllib.parse

from fake_server import FakeServer, Response

BASE = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<loc>[^/]+)/batchPredictionJobs"
JOB_ID = r"(?P<id>[0-9]+)"
MODEL_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+/)?publishers/(?P<publisher>"
                      r"anthropic|google)/models/(?P<model>[^/]+)$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
UNIT = 256 * 1024
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
BQ_OUTPUT_SCHEMA = [{"name": "custom_id", "type": "STRING", "mode": "NULLABLE"},
                    {"name": "request", "type": "JSON", "mode": "NULLABLE"},
                    {"name": "response", "type": "JSON", "mode": "NULLABLE"},
                    {"name": "status", "type": "STRING", "mode": "NULLABLE"},
                    {"name": "processed_time", "type": "TIMESTAMP", "mode": "NULLABLE"}]
TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
            "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED")


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def rfc3339(t):
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_bq(uri):
    """bq://project.dataset[.table] -> (project, dataset, table or None); None when not one.
    The project may hold dots (domain-scoped "example.com:p"): the names split from the right."""
    if not isinstance(uri, str) or not uri.startswith("bq://"):
        return None
    parts = uri[5:].split(".")
    if len(parts) >= 3 and ":" in parts[0] and len(parts) > 3:
        parts = [".".join(parts[:-2])] + parts[-2:]
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def bq_value(v):
    """A cell as tabledata.list renders it: every scalar a string, NULL as null."""
    if v is None:
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return v if isinstance(v, str) else json.dumps(v)


def parse_gs(uri):
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        return None, None
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


class Job:
    """One batchPredictionJob's facts; its state and output follow from them and the clock."""

    def __init__(self, jid, body, created, cfg, project_number, location, requests):
        self.id = jid
        self.name = f"projects/{project_number}/locations/{location}/batchPredictionJobs/{jid}"
        self.body = body
        self.created = created
        self.requests = requests  # [(custom_id or None, raw line, request object or None)]
        self.fail = bool(cfg["fail_model"] and cfg["fail_model"] in body["model"])
        self.internal = False  # fails with INTERNAL (code 13): a region's first job may
        self.run_start = created + cfg["queued_s"] + cfg["pending_s"]
        self.run_end = self.run_start + cfg["running_s"]
        self.cancel_s = cfg["cancel_s"]
        self.shards = max(1, int(cfg["output_shards"]))
        self.dir_time = created + cfg["output_dir_skew_s"]
        self.queued_s = cfg["queued_s"]
        self.cancel_at = None
        self.written = False
        self.rng = random.Random(jid)
        n = len(requests)
        order = list(range(n))
        self.rng.shuffle(order)
        self.order = order  # order[k]: the k-th request to finish
        self.marker = cfg["error_marker"]
        self.no_custom_id = set(cfg["no_custom_id"])
        self.input_order = cfg["output_order"] == "input"

    def state(self, now):
        if self.cancel_at is not None:
            return "JOB_STATE_CANCELLING" if now < self.cancel_at + self.cancel_s \
                else "JOB_STATE_CANCELLED"
        if now < self.created + self.queued_s:
            return "JOB_STATE_QUEUED"
        if now < self.run_start:
            return "JOB_STATE_PENDING"
        if self.fail:
            return "JOB_STATE_FAILED"
        if now < self.run_end:
            return "JOB_STATE_RUNNING"
        return "JOB_STATE_SUCCEEDED"

    def finished(self, now):
        """How many requests have finished by now (in processing order)."""
        if self.fail or now < self.run_start:
            return 0
        stop = now if self.cancel_at is None else min(now, self.cancel_at)
        if stop <= self.run_start:
            return 0
        n = len(self.requests)
        span = self.run_end - self.run_start
        done = n if span <= 0 else int(n * (stop - self.run_start) / span)
        return min(n, done)

    def end_time(self, now):
        st = self.state(now)
        if st == "JOB_STATE_FAILED":
            return self.run_start
        if st == "JOB_STATE_CANCELLED":
            return self.cancel_at + self.cancel_s
        if st == "JOB_STATE_SUCCEEDED":
            return self.run_end
        return None

    def has_output_dir(self, now):
        return not self.fail and now >= self.run_start and \
            (self.cancel_at is None or self.cancel_at > self.run_start)

    def bq_output(self):
        """(project, dataset, table) of a BigQuery destination, else None. A dataset gets a
        new table named for the job's time (Vertex's predictions_<timestamp>)."""
        oc = self.body["outputConfig"]
        if oc.get("predictionsFormat") != "bigquery":
            return None
        proj, ds, table = parse_bq(oc["bigqueryDestination"]["outputUri"])
        stamp = datetime.datetime.fromtimestamp(self.dir_time, datetime.timezone.utc)
        return proj, ds, table or stamp.strftime("predictions_%Y_%m_%dT%H_%M_%S_%f")[:-3] + "Z"

    def output_dir(self):
        prefix = self.body["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        return f"{prefix}/prediction-model-{rfc3339(self.dir_time)}"

    def is_errored(self, i):
        _, _, req = self.requests[i]
        if not isinstance(req, dict):
            return "Bad Request: invalid JSON"
        if not isinstance(req.get("anthropic_version"), str) or \
                not req["anthropic_version"].startswith("vertex-"):
            return 'Bad Request: {"type":"error","error":{"type":"invalid_request_error",' \
                   '"message":"anthropic_version: Field required"}}'
        if "model" in req:
            # The job names the model; a Claude batch request body has none.
            return 'Bad Request: {"type":"error","error":{"type":"invalid_request_error",' \
                   '"message":"model: Extra inputs are not permitted"}}'
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not isinstance(req.get("max_tokens"), int):
            return 'Bad Request: {"type":"error","error":{"type":"invalid_request_error",' \
                   '"message":"messages: Field required"}}'
        if self.marker and self.marker in json.dumps(msgs):
            return 'Bad Request: {"type":"error","error":{"type":"invalid_request_error",' \
                   '"message":"prompt is too long: 210000 tokens > 200000 maximum"}}'
        return None

    def counts(self, now):
        k = self.finished(now)
        bad = sum(1 for i in self.order[:k] if self.is_errored(i))
        return k - bad, bad, len(self.requests) - k

    def output_line(self, i, t):
        cid, raw, req = self.requests[i]
        line = {"custom_id": cid, "request": req if req is not None else raw}
        if cid in self.no_custom_id:
            del line["custom_id"]  # seen on Vertex: a line that lost its custom_id
        err = self.is_errored(i)
        if err:
            line["status"] = err
        else:
            text = ""
            for m in req["messages"]:
                c = m.get("content") if isinstance(m, dict) else None
                text = c if isinstance(c, str) else json.dumps(c)
            model = MODEL_RE.match(self.body["model"]).group("model")
            line["response"] = {
                "id": "msg_vrtx_01" + hashlib.sha256(f"{self.id}/{i}".encode()).hexdigest()[:22],
                "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": f"echo: {text}"}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 10 + len(text) // 4, "output_tokens": 3}}
            line["status"] = ""
        line["processed_time"] = rfc3339(t)
        return compact(line)


class FakeVertex(FakeServer):
    name = "vertex"

    def default_config(self):
        return {
            "project_number": "123456789012",
            "queued_s": 0.0,            # QUEUED, then PENDING, then RUNNING
            "pending_s": 0.3,
            "running_s": 1.0,
            "cancel_s": 0.3,            # CANCELLING -> CANCELLED
            "fail_model": "fail",       # a model containing this fails (None: never)
            "fail_message": "Failed to run inference job. Quota exceeded for "
                            "aiplatform.googleapis.com/online_prediction_requests_per_base_model.",
            "error_marker": "fail-me",  # a request mentioning it gets an errored line
            "output_shards": 1,         # predictions.jsonl, or predictions_000N.jsonl
            "output_dir_skew_s": 0.731, # output dir time - createTime (never equal, C.7)
            "token_lifetime": 3600.0,   # real lifetime of issued tokens
            "reported_expires_in": None,  # what the token answer says (None: the lifetime)
            "expires_in_as_string": False,
            "jobs_page_max": 2,         # jobs per list page at most (pageSize is honoured below)
            "objects_page_max": 1000,
            "persist_max": None,        # bytes of a resumable chunk kept (None: all)
            "media_chunk": 4096,        # bytes per chunk of an alt=media download
            # Unfinished jobs per project at once; a create beyond is refused with 429
            # RESOURCE_EXHAUSTED ("4 concurrent batch jobs per project" by default, Google's
            # Claude batch page). None: no limit.
            "max_running": 4,
            "cancel_terminal": "ignore",  # or "error": 400 FAILED_PRECONDITION
            "output_order": "processing",  # order of output lines, or "input"
            "bq_page_max": 2,           # tabledata.list rows per page at most
            # The first job of each region fails with INTERNAL (code 13), as Google's Claude
            # batch page warns; the next ones run.
            "internal_first_job": False,
            "internal_message": "Internal error encountered. The first batch job in a region "
                                "may fail while the region is provisioned; retry in about "
                                "10 minutes.",
            "no_custom_id": (),         # custom_ids whose output line comes without one
        }

    def reset_state(self):
        with self.lock:
            self.jobs = {}              # id -> Job, in creation order
            self.jobs_created = 0
            self.objects = {}           # (bucket, name) -> {"data", "generation", "ctype", "t"}
            self.sessions = {}          # upload_id -> session dict
            self.tokens = {}            # token -> real expiry (clock time)
            self.tokens_issued = []
            self.service_accounts = {}  # email -> public key PEM
            self.users = {}             # refresh_token -> (client_id, client_secret)
            self.stats = {"jwt_grants": 0, "refresh_grants": 0, "unauthenticated": 0,
                          "bad_grants": 0, "media_uploads": 0, "resumable_sessions": 0,
                          "chunks": 0, "status_queries": 0, "downloads": 0,
                          "quota_refusals": 0, "most_running": 0}
            self.create_bodies = []
            self.regions_used = set()
            self.tables = {}            # (project, dataset, table) -> {"schema", "rows"}
            self.clock_offset = 0.0
            self._rng = random.Random()
            self._loc = "us-east5"

    def routes(self):
        self.route("POST", BASE, self._api(self.h_create))
        self.route("GET", BASE, self._api(self.h_list))
        self.route("GET", f"{BASE}/{JOB_ID}", self._api(self.h_get))
        self.route("POST", f"{BASE}/{JOB_ID}:cancel", self._api(self.h_cancel))
        self.route("DELETE", f"{BASE}/{JOB_ID}", self._api(self.h_delete))
        self.route("POST", r"/upload/storage/v1/b/(?P<bucket>[^/]+)/o", self._api(self.h_upload))
        self.route("PUT", r"/upload/storage/v1/b/(?P<bucket>[^/]+)/o", self._api(self.h_put))
        self.route("GET", r"/storage/v1/b/(?P<bucket>[^/]+)/o", self._api(self.h_objects))
        self.route("GET", r"/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>.+)",
                   self._api(self.h_object))
        self.route("DELETE", r"/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>.+)",
                   self._api(self.h_object_delete))
        self.route("POST", r"/token", self.h_token)
        bq = r"/bigquery/v2/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables"
        self.route("POST", bq, self._api(self.h_table_insert))
        self.route("GET", bq + r"/(?P<t>[^/]+)", self._api(self.h_table_get))
        self.route("GET", bq + r"/(?P<t>[^/]+)/data", self._api(self.h_table_data))

    # --- envelope, time, auth -------------------------------------------------------------
    def now(self):
        return time.time() + self.clock_offset

    def error_body(self, status, message, kind=None):
        return {"error": {"code": status, "message": message,
                          "status": kind or STATUS_NAMES.get(status, "UNKNOWN")}}

    def rate_limit_applies(self, method, path):
        return path != "/token"  # the token endpoint is the auth server's, not Vertex AI's

    def rate_limited_response(self, retry_after, limit, window):
        # https://cloud.google.com/vertex-ai/docs/quotas and
        # https://cloud.google.com/apis/design/errors: 429 RESOURCE_EXHAUSTED, no retry-after
        # (clients back off).
        return self.json(self.error_body(
            429, "Quota exceeded for quota metric 'Resource management (CRUD) requests' and "
            "limit 'Resource management (CRUD) requests per minute per region' of service "
            "'aiplatform.googleapis.com'.", "RESOURCE_EXHAUSTED"), status=429)

    def json(self, obj, status=200, headers=None):
        return Response(status, compact(obj), headers, content_type="application/json")

    def _api(self, fn):
        def handler(req):
            auth = req.headers.get("authorization") or ""
            tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            with self.lock:
                exp = self.tokens.get(tok)
                ok = exp is not None and self.now() < exp
                if not ok:
                    self.stats["unauthenticated"] += 1
            if not ok:
                req.drain()
                return self.error(
                    401, "Request had invalid authentication credentials. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
            return fn(req)
        return handler

    # --- OAuth2 token endpoint (C.8) ------------------------------------------------------
    def _oauth_error(self, error, description, status=400):
        with self.lock:
            self.stats["bad_grants"] += 1
        return self.json({"error": error, "error_description": description}, status)

    def _issue(self):
        tok = "ya29.fake-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        life = float(self.config["token_lifetime"])
        reported = self.config["reported_expires_in"]
        reported = int(life if reported is None else reported)
        with self.lock:
            self.tokens[tok] = self.now() + life
            self.tokens_issued.append(tok)
        body = {"access_token": tok, "token_type": "Bearer",
                "expires_in": str(reported) if self.config["expires_in_as_string"] else reported}
        return self.json(body, headers={"Cache-Control": "no-store"})

    def h_token(self, req):
        ctype = req.headers.get("content-type") or ""
        if "application/x-www-form-urlencoded" not in ctype:
            return self._oauth_error("invalid_request", "Bad Request")
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(req.body.decode(),
                                                            keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            why = self._check_jwt(form.get("assertion", ""), f"{self.url}/token")
            if why:
                return self._oauth_error("invalid_grant", why)
            with self.lock:
                self.stats["jwt_grants"] += 1
            return self._issue()
        if grant == "refresh_token":
            with self.lock:
                user = self.users.get(form.get("refresh_token"))
            if not user:
                return self._oauth_error("invalid_grant", "Bad Request")
            if user != (form.get("client_id"), form.get("client_secret")):
                return self._oauth_error("invalid_client", "Unauthorized", 401)
            with self.lock:
                self.stats["refresh_grants"] += 1
            return self._issue()
        return self._oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")

    def _check_jwt(self, jwt, aud):
        parts = jwt.split(".")
        if len(parts) != 3:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except ValueError:
            return "Invalid JWT: not base64url JSON"
        if header.get("alg") != "RS256" or header.get("typ") not in (None, "JWT"):
            return "Invalid JWT: alg must be RS256"
        with self.lock:
            pub = self.service_accounts.get(claims.get("iss"))
        if not pub:
            return "Invalid grant: account not found"
        now = self.now()
        if claims.get("aud") != aud:
            return f"Invalid JWT: aud must be {aud}"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid OAuth scope or ID token audience provided."
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or \
                exp <= iat or abs(iat - now) > 300:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a " \
                   "reasonable timeframe. Check your iat and exp values in the JWT claim."
        if not self._verify_rs256(pub, f"{parts[0]}.{parts[1]}".encode(), sig):
            return "Invalid JWT Signature."
        return None

    @staticmethod
    def _verify_rs256(pub_pem, data, sig):
        with tempfile.TemporaryDirectory() as d:
            paths = {n: os.path.join(d, n) for n in ("pub.pem", "data", "sig")}
            for n, v in (("pub.pem", pub_pem.encode() if isinstance(pub_pem, str) else pub_pem),
                         ("data", data), ("sig", sig)):
                with open(paths[n], "wb") as f:
                    f.write(v)
            r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", paths["pub.pem"],
                                "-signature", paths["sig"], paths["data"]],
                               capture_output=True)
            return r.returncode == 0

    # --- jobs (C.2-C.5) -------------------------------------------------------------------
    def _check_project(self, req):
        loc = req.match.group("loc")
        if loc == "global":
            return self.error(400, "Batch prediction for Anthropic models is not supported in "
                              "location global. Please use a regional endpoint.")
        return None

    def _render(self, job, now):
        self._materialize(job, now)
        st = job.state(now)
        out = {"name": job.name, "displayName": job.body["displayName"],
               "model": job.body["model"], "inputConfig": job.body["inputConfig"],
               "outputConfig": job.body["outputConfig"], "state": st,
               "createTime": rfc3339(job.created),
               "updateTime": rfc3339(min(now, job.end_time(now) or now))}
        if job.body.get("labels"):
            out["labels"] = job.body["labels"]
        if now >= job.run_start and not job.fail and \
                (job.cancel_at is None or job.cancel_at > job.run_start):
            out["startTime"] = rfc3339(job.run_start)
        end = job.end_time(now)
        if end is not None:
            out["endTime"] = rfc3339(end)
        if job.has_output_dir(now) and job.bq_output():
            proj, ds, table = job.bq_output()
            out["outputInfo"] = {"bigqueryOutputDataset": f"bq://{proj}.{ds}",
                                 "bigqueryOutputTable": table}
        elif job.has_output_dir(now):
            out["outputInfo"] = {"gcsOutputDirectory": job.output_dir()}
        if st not in ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_FAILED"):
            ok, bad, rest = job.counts(now)
            stats = {}
            for k, v in (("successfulCount", ok), ("failedCount", bad),
                         ("incompleteCount", rest)):
                if v:
                    stats[k] = str(v)  # int64 as strings, zeros omitted (C.1)
            if stats:
                out["completionStats"] = stats
        if st == "JOB_STATE_FAILED" and job.internal:
            out["error"] = {"code": 13, "message": self.config["internal_message"]}
        elif st == "JOB_STATE_FAILED":
            out["error"] = {"code": 9, "message": self.config["fail_message"]}
        elif st == "JOB_STATE_CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELED"}
        return out

    def _materialize(self, job, now):
        """Writes a finished job's output files, once."""
        st = job.state(now)
        if job.written or st not in TERMINAL:
            return
        job.written = True
        if not job.has_output_dir(now):
            return
        if st == "JOB_STATE_CANCELLED":
            # "Due to a known bug, cancelled jobs write no results" (Google's Claude batch
            # page): the output directory is named, nothing is written to it.
            return
        k = job.finished(now)
        done = sorted(job.order[:k]) if job.input_order else job.order[:k]
        lines = [job.output_line(i, job.run_start + 0.001 * (j + 1))
                 for j, i in enumerate(done)]
        if job.bq_output():
            # The predictions table: the input's columns, response and status (Google's
            # "Batch prediction for BigQuery" page), processed_time.
            rows = []
            for ln in lines:
                o = json.loads(ln)
                t = datetime.datetime.strptime(o["processed_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
                t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
                rows.append({"custom_id": o.get("custom_id"), "request": o.get("request"),
                             "response": o.get("response"), "status": o.get("status"),
                             "processed_time": f"{t:.6E}"})
            self.add_table(*job.bq_output(), rows, schema=BQ_OUTPUT_SCHEMA)
            return
        bucket, base = parse_gs(job.output_dir())
        shards = [lines[s::job.shards] for s in range(job.shards)]
        for s, part in enumerate(shards):
            name = "predictions.jsonl" if job.shards == 1 else f"predictions_{s + 1:04d}.jsonl"
            self._put_object(bucket, f"{base}/{name}",
                             b"".join(ln + b"\n" for ln in part), "application/jsonl")

    def _advance_all(self):
        now = self.now()
        with self.lock:
            for job in self.jobs.values():
                self._materialize(job, now)

    def _read_requests(self, uris):
        requests = []
        for uri in uris:
            bucket, name = parse_gs(uri)
            with self.lock:
                obj = self.objects.get((bucket, name))
            if obj is None:
                return None, f"Input file {uri} does not exist."
            for raw in obj["data"].split(b"\n"):
                raw = raw.rstrip(b"\r")
                if not raw.strip():
                    continue
                try:
                    o = json.loads(raw)
                except ValueError:
                    o = None
                cid = o.get("custom_id") if isinstance(o, dict) else None
                req = o.get("request") if isinstance(o, dict) else None
                requests.append((cid, raw.decode(errors="replace"), req))
        return requests, None

    def _read_table(self, uri):
        proj, ds, table = parse_bq(uri)
        with self.lock:
            t = self.tables.get((proj, ds, table))
        if t is None:
            return None, f"Not found: Table {proj}:{ds}.{table}"
        out = []
        for row in t["rows"]:
            req = row.get("request")
            if isinstance(req, str):
                try:
                    req = json.loads(req)
                except ValueError:
                    req = None
            out.append((row.get("custom_id"), json.dumps(row), req))
        return out, None

    def _new_job(self, body):
        with self.lock:
            running = sum(1 for j in self.jobs.values() if j.state(self.now()) not in TERMINAL)
        if self.config["max_running"] is not None and running >= self.config["max_running"]:
            with self.lock:
                self.stats["quota_refusals"] += 1
            return None, self.error(429, "Quota exceeded for quota metric 'Concurrent batch "
                                    "prediction jobs' and limit 'Concurrent batch prediction "
                                    "jobs per region' of service 'aiplatform.googleapis.com'.")
        if not isinstance(body, dict) or not isinstance(body.get("displayName"), str) or \
                not body["displayName"]:
            return None, self.error(400, "Field displayName is required.")
        if len(body["displayName"]) > 128:
            return None, self.error(400, "displayName must be at most 128 characters.")
        if not isinstance(body.get("model"), str) or not MODEL_RE.match(body["model"]):
            return None, self.error(400, f"Invalid model: {body.get('model')!r}")
        ic, oc = body.get("inputConfig"), body.get("outputConfig")
        bq_in = isinstance(ic, dict) and ic.get("instancesFormat") == "bigquery"
        if bq_in:
            src = ic.get("bigquerySource")
            ref = parse_bq(src.get("inputUri")) if isinstance(src, dict) else None
            if not ref or not ref[2]:
                return None, self.error(400, "bigquerySource.inputUri must be "
                                        "bq://project.dataset.table.")
        elif not isinstance(ic, dict) or ic.get("instancesFormat") != "jsonl" or \
                not isinstance(ic.get("gcsSource"), dict):
            return None, self.error(400, "inputConfig must have instancesFormat jsonl and "
                                    "gcsSource.")
        else:
            uris = ic["gcsSource"].get("uris")
            uris = [uris] if isinstance(uris, str) else uris  # both accepted (C.3)
            if not isinstance(uris, list) or not uris or \
                    not all(parse_gs(u)[1] for u in uris):
                return None, self.error(400, "gcsSource.uris must be gs:// URIs.")
        if isinstance(oc, dict) and oc.get("predictionsFormat") == "bigquery":
            dest = oc.get("bigqueryDestination")
            if not isinstance(dest, dict) or not parse_bq(dest.get("outputUri")):
                return None, self.error(400, "bigqueryDestination.outputUri must be "
                                        "bq://project.dataset[.table].")
        elif not isinstance(oc, dict) or oc.get("predictionsFormat") != "jsonl" or \
                not isinstance(oc.get("gcsDestination"), dict) or \
                not parse_gs(oc["gcsDestination"].get("outputUriPrefix"))[0]:
            return None, self.error(400, "outputConfig must have predictionsFormat jsonl and "
                                    "gcsDestination.outputUriPrefix.")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or len(labels) > 64 or not all(
                isinstance(k, str) and isinstance(v, str) and LABEL_KEY_RE.match(k) and
                LABEL_VALUE_RE.match(v) for k, v in labels.items()):
            return None, self.error(400, "Label keys and values can only contain lowercase "
                                    "letters, numeric characters, underscores and dashes.")
        if bq_in:
            requests, why = self._read_table(ic["bigquerySource"]["inputUri"])
        else:
            requests, why = self._read_requests(uris)
        if why:
            return None, self.error(400, why)
        with self.lock:
            self.jobs_created += 1
            jid = str(self._rng.randrange(10 ** 18, 10 ** 19))
            job = Job(jid, body, self.now(), self.config, self.config["project_number"],
                      self._loc, requests)
            if self.config["internal_first_job"] and self._loc not in self.regions_used:
                job.internal = job.fail = True
            self.regions_used.add(self._loc)
            self.jobs[jid] = job
            self.stats["most_running"] = max(self.stats["most_running"], running + 1)
        return job, None

    def h_create(self, req):
        bad = self._check_project(req)
        if bad:
            return bad
        try:
            body = req.json()
        except ValueError:
            return self.error(400, "Invalid JSON payload received.")
        with self.lock:
            self.create_bodies.append(body)
            self._loc = req.match.group("loc")
        job, err = self._new_job(body)
        if err:
            return err
        return self.json(self._render(job, self.now()))

    def h_list(self, req):
        bad = self._check_project(req)
        if bad:
            return bad
        try:
            size = int(req.query.get("pageSize") or 100)
            start = int(req.query.get("pageToken") or 0)
        except ValueError:
            return self.error(400, "Invalid pageToken.")
        size = max(1, min(size, self.config["jobs_page_max"]))
        now = self.now()
        with self.lock:
            jobs = list(self.jobs.values())[::-1]  # newest first
            page = [self._render(j, now) for j in jobs[start:start + size]]
        out = {}
        if page:
            out["batchPredictionJobs"] = page
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return self.json(out)

    def _job(self, req):
        with self.lock:
            job = self.jobs.get(req.match.group("id"))
        if job is None:
            return None, self.error(404, f"The BatchPredictionJob does not exist: "
                                    f"{req.match.group('id')}")
        return job, None

    def h_get(self, req):
        job, err = self._job(req)
        if err:
            return err
        with self.lock:
            return self.json(self._render(job, self.now()))

    def h_cancel(self, req):
        job, err = self._job(req)
        if err:
            return err
        now = self.now()
        with self.lock:
            st = job.state(now)
            if st in TERMINAL or st == "JOB_STATE_CANCELLING":
                if st in TERMINAL and self.config["cancel_terminal"] == "error":
                    return self.error(400, f"The BatchPredictionJob {job.name} is in state "
                                      f"{st} and cannot be cancelled.", "FAILED_PRECONDITION")
                return self.json({})
            job.cancel_at = now
        return self.json({})

    def h_delete(self, req):
        job, err = self._job(req)
        if err:
            return err
        with self.lock:
            if job.state(self.now()) not in TERMINAL:
                return self.error(400, "The BatchPredictionJob is not finished.",
                                  "FAILED_PRECONDITION")
            del self.jobs[job.id]
        op = job.name.replace("/batchPredictionJobs/", "/operations/")
        return self.json({"name": op, "metadata": {
            "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata",
            "genericMetadata": {"createTime": rfc3339(self.now())}}, "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}})

    # --- BigQuery (tables.insert, tables.get, tabledata.list) -------------------------------
    # https://cloud.google.com/bigquery/docs/reference/rest/v2/tables and .../tabledata/list:
    # every cell value a string (or null), rows as {"f": [{"v": ...}]}, totalRows a string,
    # the next page's token in "pageToken".
    def _bq_error(self, status, message, reason):
        return self.json({"error": {"code": status, "message": message, "errors": [
            {"message": message, "domain": "global", "reason": reason}],
            "status": STATUS_NAMES.get(status, "UNKNOWN")}}, status)

    def _bq_table(self, req):
        key = tuple(urllib.parse.unquote(req.match.group(k)) for k in ("p", "d", "t"))
        with self.lock:
            t = self.tables.get(key)
        if t is None:
            return key, None, self._bq_error(404, f"Not found: Table {key[0]}:{key[1]}."
                                             f"{key[2]}", "notFound")
        return key, t, None

    def _bq_resource(self, key, t):
        return {"kind": "bigquery#table", "id": f"{key[0]}:{key[1]}.{key[2]}",
                "tableReference": {"projectId": key[0], "datasetId": key[1],
                                   "tableId": key[2]},
                "schema": {"fields": t["schema"]}, "numRows": str(len(t["rows"])),
                "type": "TABLE", "location": self._loc}

    def h_table_insert(self, req):
        try:
            body = req.json()
            ref = body["tableReference"]
            key = (ref["projectId"], ref["datasetId"], ref["tableId"])
        except (ValueError, KeyError, TypeError):
            return self._bq_error(400, "Invalid table resource", "invalid")
        with self.lock:
            if key in self.tables:
                return self._bq_error(409, f"Already Exists: Table {key[0]}:{key[1]}."
                                      f"{key[2]}", "duplicate")
            self.tables[key] = {"schema": (body.get("schema") or {}).get("fields", []),
                                "rows": []}
            return self.json(self._bq_resource(key, self.tables[key]))

    def h_table_get(self, req):
        self._advance_all()
        key, t, err = self._bq_table(req)
        if err:
            return err
        with self.lock:
            return self.json(self._bq_resource(key, t))

    def h_table_data(self, req):
        self._advance_all()
        key, t, err = self._bq_table(req)
        if err:
            return err
        try:
            size = int(req.query.get("maxResults") or 100000)
            start = int(req.query.get("pageToken") or req.query.get("startIndex") or 0)
        except ValueError:
            return self._bq_error(400, "Invalid pageToken", "invalid")
        size = max(1, min(size, self.config["bq_page_max"]))
        with self.lock:
            names = [f["name"] for f in t["schema"]]
            rows = t["rows"][start:start + size]
            out = {"kind": "bigquery#tableDataList", "etag": f"\"{len(t['rows'])}\"",
                   "totalRows": str(len(t["rows"]))}
            if rows:
                out["rows"] = [{"f": [{"v": bq_value(r.get(n))} for n in names]}
                               for r in rows]
            if start + size < len(t["rows"]):
                out["pageToken"] = str(start + size)
        return self.json(out)

    def add_table(self, project, dataset, table, rows, schema=None):
        """A table with rows (dicts by column name), as BigQuery holds it."""
        schema = schema or [{"name": "custom_id", "type": "STRING", "mode": "NULLABLE"},
                            {"name": "request", "type": "JSON", "mode": "NULLABLE"}]
        with self.lock:
            self.tables[(project, dataset, table)] = {"schema": schema, "rows": list(rows)}

    # --- Cloud Storage (C.9) --------------------------------------------------------------
    def _gcs_error(self, status, message, reason):
        return self.json({"error": {"code": status, "message": message, "errors": [
            {"domain": "global", "reason": reason, "message": message}]}}, status)

    def _resource(self, bucket, name, obj):
        data = obj["data"]
        return {"kind": "storage#object", "id": f"{bucket}/{name}/{obj['generation']}",
                "name": name, "bucket": bucket, "generation": str(obj["generation"]),
                "metageneration": "1", "contentType": obj["ctype"], "size": str(len(data)),
                "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
                "timeCreated": rfc3339(obj["t"]), "updated": rfc3339(obj["t"]),
                "storageClass": "STANDARD",
                "selfLink": f"{self.url}/storage/v1/b/{bucket}/o/"
                            f"{urllib.parse.quote(name, safe='')}",
                "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/"
                             f"{urllib.parse.quote(name, safe='')}?alt=media"}

    def _put_object(self, bucket, name, data, ctype):
        with self.lock:
            gen = int(self.now() * 1e6) + len(self.objects)
            obj = {"data": bytes(data), "generation": gen, "ctype": ctype, "t": self.now()}
            self.objects[(bucket, name)] = obj
            return self._resource(bucket, name, obj)

    def h_upload(self, req):
        bucket = urllib.parse.unquote(req.match.group("bucket"))
        kind = req.query.get("uploadType")
        name = req.query.get("name")
        if kind == "media":
            if not name:
                return self._gcs_error(400, "Required parameter: name", "required")
            data = req.body
            with self.lock:
                self.stats["media_uploads"] += 1
            return self.json(self._put_object(bucket, name, data,
                                              req.headers.get("content-type") or
                                              "application/octet-stream"))
        if kind == "resumable":
            meta = {}
            if req.body.strip():
                try:
                    meta = json.loads(req.body)
                except ValueError:
                    return self._gcs_error(400, "Invalid JSON metadata", "parseError")
            name = name or meta.get("name")
            if not name:
                return self._gcs_error(400, "Required parameter: name", "required")
            total = req.headers.get("x-upload-content-length")
            uid = base64.urlsafe_b64encode(os.urandom(18)).decode().rstrip("=")
            with self.lock:
                self.stats["resumable_sessions"] += 1
                self.sessions[uid] = {"bucket": bucket, "name": name, "data": bytearray(),
                                      "total": int(total) if total else None, "done": None,
                                      "ctype": req.headers.get("x-upload-content-type") or
                                      "application/octet-stream"}
            loc = (f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name="
                   f"{urllib.parse.quote(name, safe='')}&upload_id={uid}")
            return Response(200, b"", {"Location": loc, "X-GUploader-UploadID": uid})
        return self._gcs_error(400, f"Unsupported uploadType: {kind}", "invalid")

    def h_put(self, req):
        uid = req.query.get("upload_id")
        with self.lock:
            s = self.sessions.get(uid)
        if s is None:
            req.drain()
            return self._gcs_error(404, "No such upload session", "notFound")
        cr = req.headers.get("content-range") or ""
        m = re.match(r"^bytes (\*|(\d+)-(\d+))/(\*|\d+)$", cr.strip())
        if not m:
            req.drain()
            return self._gcs_error(400, f"Invalid Content-Range: {cr!r}", "invalid")
        total = None if m.group(4) == "*" else int(m.group(4))
        data = req.body
        with self.lock:
            if s["done"] is not None:
                return self.json(s["done"])
            if total is not None:
                if s["total"] is not None and s["total"] != total:
                    return self._gcs_error(400, "Content-Range total differs from the "
                                           "session's", "invalid")
                s["total"] = total
            if m.group(1) == "*":
                self.stats["status_queries"] += 1
            else:
                self.stats["chunks"] += 1
                first, last = int(m.group(2)), int(m.group(3))
                if last - first + 1 != len(data):
                    return self._gcs_error(400, "Content-Range does not match the body length",
                                           "invalid")
                have = len(s["data"])
                if first > have:
                    return self._gcs_error(400, f"Chunk starts at {first}, {have} bytes "
                                           "received so far", "invalid")
                final = total is not None and last + 1 == total
                if not final and len(data) % UNIT:
                    return self._gcs_error(400, "Chunk size must be a multiple of 256 KiB",
                                           "invalid")
                keep = data[have - first:]
                pm = self.config["persist_max"]
                if pm is not None:
                    # Keeps less than it was sent (whole 256 KiB units): the 308's Range
                    # tells the client where to go on from (C.9).
                    keep = keep[:max(UNIT, pm // UNIT * UNIT)]
                s["data"] += keep
            if s["total"] is not None and len(s["data"]) == s["total"]:
                s["done"] = self._put_object(s["bucket"], s["name"], s["data"], s["ctype"])
                return self.json(s["done"])
            headers = {}
            if s["data"]:
                headers["Range"] = f"bytes=0-{len(s['data']) - 1}"
            return Response(308, b"", headers)

    def h_objects(self, req):
        self._advance_all()
        bucket = urllib.parse.unquote(req.match.group("bucket"))
        prefix = req.query.get("prefix", "")
        try:
            size = int(req.query.get("maxResults") or 1000)
        except ValueError:
            return self._gcs_error(400, "Invalid maxResults", "invalid")
        size = max(1, min(size, self.config["objects_page_max"]))
        token = req.query.get("pageToken")
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else None
        with self.lock:
            names = sorted(n for (b, n) in self.objects if b == bucket and n.startswith(prefix)
                           and (after is None or n > after))
            page = names[:size]
            items = [self._resource(bucket, n, self.objects[(bucket, n)]) for n in page]
        out = {"kind": "storage#objects"}
        if items:
            out["items"] = items
        if len(names) > size:
            out["nextPageToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return self.json(out)

    def h_object(self, req):
        self._advance_all()
        bucket = urllib.parse.unquote(req.match.group("bucket"))
        name = urllib.parse.unquote(req.match.group("name"))
        with self.lock:
            obj = self.objects.get((bucket, name))
        if obj is None:
            return self._gcs_error(404, f"No such object: {bucket}/{name}", "notFound")
        if req.query.get("alt") != "media":
            return self.json(self._resource(bucket, name, obj))
        with self.lock:
            self.stats["downloads"] += 1
        data, step = obj["data"], max(1, int(self.config["media_chunk"]))
        chunks = (data[i:i + step] for i in range(0, len(data), step))
        return Response(200, chunks, {"X-Goog-Generation": str(obj["generation"])},
                        content_type=obj["ctype"])

    def h_object_delete(self, req):
        bucket = urllib.parse.unquote(req.match.group("bucket"))
        name = urllib.parse.unquote(req.match.group("name"))
        with self.lock:
            if self.objects.pop((bucket, name), None) is None:
                return self._gcs_error(404, f"No such object: {bucket}/{name}", "notFound")
        return Response(204, b"")

    # --- test surface ---------------------------------------------------------------------
    def add_service_account(self, email, public_pem):
        with self.lock:
            self.service_accounts[email] = public_pem

    def add_authorized_user(self, client_id, client_secret, refresh_token):
        with self.lock:
            self.users[refresh_token] = (client_id, client_secret)

    def add_token(self, token, lifetime=3600.0):
        with self.lock:
            self.tokens[token] = self.now() + lifetime

    def job(self, jid):
        with self.lock:
            return self.jobs.get(jid)

    def job_json(self, jid):
        with self.lock:
            return self._render(self.jobs[jid], self.now())

    def object(self, bucket, name):
        with self.lock:
            obj = self.objects.get((bucket, name))
            return obj["data"] if obj else None

    def create_job(self, lines, model="claude-3-5-haiku@20241022", bucket="b",
                   display_name="made elsewhere", location="us-east5", labels=None,
                   publisher="anthropic", bq_input=None, bq_output=None):
        """Uploads lines and creates a job, as another client (console, SDK) would.
        publisher="google" makes a Gemini job (a Claude remote must not show it).
        bq_input="bq://p.d.t": the lines become that table's rows (custom_id, request) and the
        job reads it; bq_output="bq://p.d": the job writes a predictions table there."""
        name = f"elsewhere/{self._rng.randrange(10 ** 9)}/input.jsonl"
        if bq_input:
            rows = [json.loads(ln) for ln in lines]
            self.add_table(*parse_bq(bq_input), [
                {"custom_id": r.get("custom_id"), "request": r.get("request")} for r in rows])
            ic = {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": bq_input}}
        else:
            self._put_object(bucket, name, "".join(ln + "\n" for ln in lines).encode(),
                             "application/jsonl")
            ic = {"instancesFormat": "jsonl", "gcsSource": {"uris": f"gs://{bucket}/{name}"}}
        oc = {"predictionsFormat": "jsonl", "gcsDestination": {
            "outputUriPrefix": f"gs://{bucket}/elsewhere-out"}}
        if bq_output:
            oc = {"predictionsFormat": "bigquery", "bigqueryDestination": {
                "outputUri": bq_output}}
        body = {"displayName": display_name,
                "model": f"publishers/{publisher}/models/{model}",
                "inputConfig": ic, "outputConfig": oc}
        if labels:
            body["labels"] = labels
        with self.lock:
            self._loc = location
        job, err = self._new_job(body)
        if err:
            raise ValueError(err.body.decode())
        return job.id

    def advance(self, seconds):
        with self.lock:
            self.clock_offset += float(seconds)

    def control(self, req, what):
        if what == "jobs" and req.method == "POST":
            b = req.json()
            jid = self.create_job(b["lines"], model=b.get("model", "claude-3-5-haiku@20241022"))
            return Response(200, {"id": jid})
        if what == "stats" and req.method == "GET":
            with self.lock:
                return Response(200, dict(self.stats, jobs_created=self.jobs_created))
        if what == "advance" and req.method == "POST":
            self.advance(req.json().get("seconds", 0))
            return Response(200, {"ok": True})
        return None
