"""Fake OpenAI and Azure OpenAI Batch APIs (https://platform.openai.com/docs/api-reference/batch,
https://learn.microsoft.com/azure/ai-services/openai/how-to/batch; shapes from OpenAI's
published OpenAPI document, https://github.com/openai/openai-openapi), standard library only.

FakeOpenAI, under /v1:
  POST   /files                 multipart/form-data (purpose, file) -> FileObject
  GET    /files                 list: purpose, limit (1..10000), order, after
  GET    /files/{id}            retrieve        DELETE /files/{id}   delete
  GET    /files/{id}/content    the bytes (chunked)
  POST   /batches               create {input_file_id, endpoint, completion_window, metadata}
  GET    /batches               list, newest first: after, limit (1..100, default 20)
  GET    /batches/{id}          retrieve        POST /batches/{id}/cancel
Auth: Authorization: Bearer <api_key>. Errors: {"error": {message, type, param, code}}.

FakeAzure, the same under /openai (dated API: ?api-version= required, upload answers 201) and
/openai/v1 (no api-version). Auth: api-key header, or Authorization: Bearer <one of tokens>.
Quirks (each a config key): capitalised statuses ("Validating"), ISO-8601 times with 7
fractional digits, request_counts null while validating, "" file ids before the end, endpoint
null in the create answer, an empty error file even on success, errors.data[].line a string
(errors.data one object with errors_as_object), uploads "pending" for file_pending_s before
"processed" (create refuses until then), body.model must name a deployment, files never
expire unless expires_after says so (14 to 30 days), and at most max_files_no_expiry (500)
files without an expiry per resource (B.3, B.8: https://learn.microsoft.com/azure/ai-foundry/
openai/how-to/batch, .../batch-limits).

Expiry (https://platform.openai.com/docs/api-reference/files/create): uploads take
expires_after[anchor]=created_at and expires_after[seconds] form fields, creates an
output_expires_after {anchor, seconds} object; out of range is a 400. Quota on demand:
token_limit_batches makes the next creates' batches fail with errors.data code
token_limit_exceeded (A.6), token_limit_at_create refuses the create with a 400 (B.4).

Time is lazy: nothing runs in the background. A batch validates for validating_s, then its
requests finish one by one over processing_s (in a shuffled order), then it finalizes for
finalizing_s. A cancel makes it cancelling for cancelling_s, then cancelled: requests finished
by the cancel keep their results, the others get error-file lines "batch_cancelled". A batch not
done by expires_at (expire_s) expires the same way ("batch_expired"). Output and error files
appear when the batch is first seen ended, their lines shuffled.

Validation happens after create, as the real service does (A.6): a line that is not JSON, has
no custom_id, another url than the endpoint, body.model "fail-validation" or a model outside
`models` (Azure: `deployments`), mixed models, duplicate custom_ids, too many requests, an empty
file, a blank line (unless blank_lines_ok) or a body with "invalid": true make the batch
`failed` with errors.data (code, message, param, line). body.model "fail-request", or a body
with "fail": true, gives that request an HTTP 400 error line.

Test surface beyond fake_server.FakeServer: create_batch(lines, endpoint), cancel_batch(id),
advance(s), batches (id -> Batch), files (id -> dict), uploads (every upload: filename,
purpose, content, chunked), creates (every create body), live_files(purpose). Over HTTP:
POST /_control/batches {"lines", "endpoint"}, POST /_control/batches/{id}/cancel,
POST /_control/advance {"seconds"}, GET /_control/stats.
"""
import datetime
import json
import math
import os
import random
import re
import time
import uuid

from fake_server import FakeServer, Response

ENDPOINTS = ["/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
             "/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos"]
FILE_PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
ID = r"(?P<id>[^/]+)"
AZURE_STATUS = {"validating": "Validating", "in_progress": "InProgress",
                "finalizing": "Finalizing", "completed": "Completed", "failed": "Failed",
                "cancelling": "Cancelling", "cancelled": "Cancelled", "expired": "Expired"}
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
               404: "invalid_request_error", 409: "invalid_request_error",
               429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False)


class Batch:
    """One batch's facts; its status, counts and files derive from them and the clock."""

    def __init__(self, bid, created, body, requests, errors, model, cfg, rng):
        self.id = bid
        self.created = created
        self.endpoint = body["endpoint"]
        self.input_file_id = body["input_file_id"]
        self.metadata = body.get("metadata")
        self.model = model
        self.requests = requests  # [{"custom_id", "body", "fail"}] in request order
        self.errors = errors      # validation errors (BatchError dicts) or None
        self.rng = rng
        n = len(requests)
        self.v_end = created + cfg["validating_s"]
        order = list(range(n))
        rng.shuffle(order)
        step = cfg["processing_s"] / max(n, 1)
        self.done_at = [0.0] * n
        for k, i in enumerate(order):
            self.done_at[i] = self.v_end + step * (k + 1)
        self.natural_end = max(self.done_at) if n else self.v_end
        self.final_end = self.natural_end + cfg["finalizing_s"]
        self.expires = created + cfg["expire_s"] if cfg["expire_s"] else None
        self.cancel_at = None
        self.cancelling_s = cfg["cancelling_s"]
        self.output_file_id = None
        self.error_file_id = None
        self.settled = False

    def stop(self):
        """When requests stop running: a cancel or the expiry, else never."""
        stops = [t for t in (self.cancel_at, self.expires) if t is not None]
        return min(stops) if stops else float("inf")

    def phase(self, now):
        """(status, {timestamp field: t}) at now."""
        t = {}
        if self.cancel_at is not None and self.cancel_at < self.v_end:
            # Cancelled while validating: nothing ran.
            t["cancelling_at"] = self.cancel_at
            end = self.cancel_at + self.cancelling_s
            if now < end:
                return "cancelling", t
            t["cancelled_at"] = end
            return "cancelled", t
        if now < self.v_end:
            return "validating", t
        if self.errors:
            t["failed_at"] = self.v_end
            return "failed", t
        t["in_progress_at"] = self.v_end
        stop = self.stop()
        if stop < self.final_end:
            if self.cancel_at is not None and self.cancel_at == stop:
                t["cancelling_at"] = stop
                end = stop + self.cancelling_s
                if now < end:
                    return "cancelling", t
                t["cancelled_at"] = end
                return "cancelled", t
            if now < stop:
                return ("in_progress" if now < self.natural_end else "finalizing"), t
            t["expired_at"] = stop
            return "expired", t
        if now < self.natural_end:
            return "in_progress", t
        t["finalizing_at"] = self.natural_end
        if now < self.final_end:
            return "finalizing", t
        t["completed_at"] = self.final_end
        return "completed", t

    def ran(self, i, now):
        return self.done_at[i] <= min(now, self.stop())


class FakeOpenAI(FakeServer):
    name = "openai"
    prefixes = ("/v1",)

    @property
    def base_url(self):
        """The value an SDK's base_url (or OPENAI_BASE_URL) takes for this server: the API
        prefix included, as in the default https://api.openai.com/v1."""
        return self.url + self.prefixes[0]

    def default_config(self):
        return {
            "api_key": "sk-test-openai",  # None: any bearer token
            "validating_s": 0.2,
            "processing_s": 0.6,          # in_progress_at to the last request done
            "finalizing_s": 0.2,
            "cancelling_s": 0.3,
            "expire_s": 24 * 3600,        # 0: never
            "models": None,               # None: any model but "fail-validation"
            "max_requests": 50000,
            "max_file_bytes": 200 * 1000 * 1000,
            "blank_lines_ok": False,      # a blank input line is invalid_json_line [I]
            "file_status": "processed",   # of a fresh upload
            "file_pending_s": 0.0,        # Azure: "pending" this long after upload
            "list_default_limit": 20,
            "list_max_limit": 100,        # lower it to force pagination
            "content_chunk": 4096,
            "shuffle_output": True,
            "cancel_terminal": "unchanged",  # or "error": 400 on a cancel of an ended batch
            # prompt_tokens_details.cached_tokens of each chat completion: part of
            # prompt_tokens, as the API counts them (real ones: prompts of 1024+ tokens)
            "cached_tokens": 0,
            # expires_after / output_expires_after seconds accepted (A.2, A.4)
            "expires_min_s": 3600,
            "expires_max_s": 30 * 86400,
            "default_expires_s": 30 * 86400,  # purpose=batch files without expires_after
            # Files without an expiry a resource may hold (Azure: 500, B.3/B.8); None: no cap
            "max_files_no_expiry": None,
            "max_files": None,             # with an expiry (Azure: 10,000)
            # Enqueued-token quota on demand (A.6, B.4): the next N creates make batches that
            # fail with token_limit_exceeded; with at_create (Azure "fail fast" regions) the
            # create itself is a 400 naming token_limit_exceeded.
            "token_limit_batches": 0,
            "token_limit_at_create": 0,
            "token_limit_skip": 0,         # creates let through before those apply
        }

    def reset_state(self):
        with self.lock:
            self.batches = {}   # id -> Batch, creation order
            self.files = {}     # id -> {"obj": FileObject, "content": bytes}
            self.deleted_files = []
            self.token_limited = []  # ids of batches failed with token_limit_exceeded
            self.uploads = []   # every upload seen: filename, purpose, content, chunked
            self.creates = []   # every create body seen
            self.clock_offset = 0.0
            self._rng = random.Random()

    def routes(self):
        for pre in self.prefixes:
            self.route("POST", f"{pre}/files", self._api(self.h_upload))
            self.route("GET", f"{pre}/files", self._api(self.h_files))
            self.route("GET", f"{pre}/files/{ID}", self._api(self.h_file))
            self.route("DELETE", f"{pre}/files/{ID}", self._api(self.h_file_delete))
            self.route("GET", f"{pre}/files/{ID}/content", self._api(self.h_content))
            self.route("POST", f"{pre}/batches", self._api(self.h_create))
            self.route("GET", f"{pre}/batches", self._api(self.h_list))
            self.route("GET", f"{pre}/batches/{ID}", self._api(self.h_get))
            self.route("POST", f"{pre}/batches/{ID}/cancel", self._api(self.h_cancel))

    # --- flavour hooks --------------------------------------------------------------------
    def now(self):
        return time.time() + self.clock_offset

    def error_body(self, status, message, kind=None, code=None, param=None):
        return {"error": {"message": message, "type": kind or ERROR_TYPES.get(status, "error"),
                          "param": param, "code": code}}

    def fail(self, status, message, code=None, param=None, kind=None):
        return Response(status, self.error_body(status, message, kind, code, param))

    def rate_limited_response(self, retry_after, limit, window):
        # https://platform.openai.com/docs/guides/rate-limits: 429 rate_limit_exceeded and the
        # x-ratelimit-*-requests headers (reset as a duration, "20s", "6m0s"); no retry-after.
        wait = max(1, math.ceil(retry_after))
        return Response(429, self.error_body(
            429, f"Rate limit reached for requests: Limit {limit}, Used {limit}, Requested 1. "
            f"Please try again in {wait}s.", "requests", "rate_limit_exceeded"),
            {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": "0",
             "x-ratelimit-reset-requests": f"{wait}s"})

    def check_auth(self, req):
        auth = req.headers.get("Authorization") or ""
        key = self.config["api_key"]
        if not auth.startswith("Bearer ") or not auth[7:] or (key and auth[7:] != key):
            return self.fail(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    def check_version(self, req):
        return None

    def new_file_id(self):
        return "file-" + "".join(self._rng.choice(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(22))

    def new_batch_id(self):
        return "batch_" + os.urandom(16).hex()

    def upload_status(self, req):
        return 200

    def wire_time(self, t):
        return int(t) if t is not None else None

    def wire_status(self, word):
        return word

    def valid_endpoint(self, ep):
        return ep in ENDPOINTS

    def same_url(self, url, endpoint):
        return url == endpoint

    def model_known(self, model):
        models = self.config["models"]
        return model != "fail-validation" and (models is None or model in models)

    def result_body(self, b, r, now):
        body = result_body(b.endpoint, r["body"], now, self._rng)
        u = body.get("usage", {})
        if "prompt_tokens" in u and "completion_tokens" in u:
            # the chat completion usage object's details, as the API sends them
            u["prompt_tokens_details"] = {
                "cached_tokens": min(self.config["cached_tokens"], u["prompt_tokens"]),
                "audio_tokens": 0}
            u["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}
        return body

    def request_id(self):
        return "req_" + os.urandom(16).hex()

    # --- plumbing -------------------------------------------------------------------------
    def _api(self, fn):
        def handle(req):
            bad = self.check_version(req) or self.check_auth(req)
            if bad:
                req.drain()
                return bad
            with self.lock:
                return fn(req)
        return handle

    def file_obj(self, fid):
        f = self.files[fid]
        obj = dict(f["obj"])
        if f.get("pending_until") and self.now() < f["pending_until"]:
            obj["status"] = "pending"
        return obj

    def add_file(self, content, filename, purpose, status="processed", pending_s=0.0,
                 fid=None, expires_s=None):
        now = self.now()
        fid = fid or self.new_file_id()
        if expires_s is None and purpose in ("batch", "batch_output"):
            expires_s = self.config["default_expires_s"]
        obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(now),
               "expires_at": int(now) + expires_s if expires_s else None,
               "filename": filename, "purpose": purpose, "status": status,
               "status_details": None}
        self.files[fid] = {"obj": obj, "content": content,
                           "pending_until": now + pending_s if pending_s else None}
        return fid

    def parse_expiry(self, obj, what):
        """seconds of an expires_after object {anchor: created_at, seconds}, None when
        absent; a Response (400) when out of the documented range."""
        if obj is None:
            return None
        lo, hi = self.config["expires_min_s"], self.config["expires_max_s"]
        if not isinstance(obj, dict) or obj.get("anchor") != "created_at":
            return self.fail(400, f"Invalid '{what}': anchor must be 'created_at'.",
                             "invalid_value", what)
        try:
            secs = int(obj.get("seconds"))
        except (TypeError, ValueError):
            return self.fail(400, f"Invalid '{what}.seconds'.", "invalid_value", what)
        if not lo <= secs <= hi:
            return self.fail(400, f"Invalid '{what}.seconds': {secs}; it must be between "
                             f"{lo} and {hi}.", "invalid_value", what)
        return secs

    def cap_refusal(self, expires):
        """The file cap of the resource (B.3, B.8): files that never expire count against
        max_files_no_expiry, all files against max_files."""
        live = [f["obj"] for f in self.files.values()]
        cap = self.config["max_files_no_expiry"]
        if expires is None and cap is not None and \
                sum(1 for o in live if not o.get("expires_at")) >= cap:
            return self.fail(400, f"The maximum number of files without an expiration "
                             f"({cap}) has been reached. Delete files or set expires_after.",
                             "quotaExceeded")
        cap = self.config["max_files"]
        if cap is not None and len(live) >= cap:
            return self.fail(400, f"The maximum number of files ({cap}) has been reached.",
                             "quotaExceeded")
        return None

    def live_files(self, purpose=None):
        with self.lock:
            self.settle_all()
            return [f["obj"] for f in self.files.values()
                    if purpose is None or f["obj"]["purpose"] == purpose]

    # --- files ----------------------------------------------------------------------------
    def h_upload(self, req):
        ctype = req.headers.get("Content-Type") or ""
        m = re.match(r'multipart/form-data;\s*boundary="?([^";]+)"?', ctype)
        if not m:
            req.drain()
            return self.fail(400, "Expected multipart/form-data.", "invalid_request")
        chunked = req.content_length is None
        body = req.body
        try:
            fields, files = parse_multipart(body, m.group(1).encode())
        except ValueError as e:
            return self.fail(400, f"Invalid multipart body: {e}", "invalid_request")
        purpose = fields.get("purpose")
        self.uploads.append({"purpose": purpose, "filename": files.get("file", (None,))[0],
                             "content": files.get("file", (None, None, b""))[2],
                             "content_type": files.get("file", (None, None))[1],
                             "chunked": chunked, "fields": sorted(fields),
                             "values": dict(fields)})
        if purpose is None:
            return self.fail(400, "Missing required parameter: 'purpose'.",
                             "missing_required_parameter", "purpose")
        if purpose not in FILE_PURPOSES:
            return self.fail(400, f"'{purpose}' is not one of {FILE_PURPOSES} - 'purpose'",
                             "invalid_value", "purpose")
        if "file" not in files:
            return self.fail(400, "Missing required parameter: 'file'.",
                             "missing_required_parameter", "file")
        filename, _, content = files["file"]
        if purpose == "batch" and not (filename or "").endswith(".jsonl"):
            return self.fail(400, "Invalid file format for Batch API. Must be .jsonl",
                             "invalid_file_format", "file")
        if purpose == "batch" and len(content) > self.config["max_file_bytes"]:
            return self.fail(400, "File is too large for the Batch API.", "file_too_large")
        # expires_after in the SDKs' bracket form, or the dotted form of Azure's curl docs
        exp = None
        for sep in ("[%s]", ".%s"):
            anchor = fields.get("expires_after" + sep % "anchor")
            secs = fields.get("expires_after" + sep % "seconds")
            if anchor is not None or secs is not None:
                exp = {"anchor": anchor, "seconds": secs}
        exp = self.parse_expiry(exp, "expires_after")
        if isinstance(exp, Response):
            return exp
        bad = self.cap_refusal(exp)
        if bad:
            return bad
        fid = self.add_file(content, filename, purpose, self.config["file_status"],
                            self.config["file_pending_s"], expires_s=exp)
        status = self.upload_status(req)
        headers = {}
        if status == 201:
            headers["Location"] = f"{self.url}{req.path}/{fid}"
        return Response(status, self.file_obj(fid), headers)

    def h_files(self, req):
        self.settle_all()
        purpose = req.query.get("purpose")
        try:
            limit = int(req.query.get("limit", 10000))
        except ValueError:
            return self.fail(400, "Invalid 'limit'.", "invalid_value", "limit")
        if not 1 <= limit <= 10000:
            return self.fail(400, "Invalid 'limit': must be between 1 and 10000.",
                             "invalid_value", "limit")
        order = req.query.get("order", "desc")
        objs = [self.file_obj(fid) for fid in self.files
                if purpose is None or self.files[fid]["obj"]["purpose"] == purpose]
        if order == "desc":
            objs.reverse()
        after = req.query.get("after")
        if after:
            ids = [o["id"] for o in objs]
            objs = objs[ids.index(after) + 1:] if after in ids else []
        page = objs[:limit]
        return Response(200, {"object": "list", "data": page,
                              "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None,
                              "has_more": len(objs) > limit})

    def h_file(self, req):
        self.settle_all()
        fid = req.match["id"]
        if fid not in self.files:
            return self.fail(404, f"No such File object: {fid}", "file_not_found", "id")
        return Response(200, self.file_obj(fid))

    def h_file_delete(self, req):
        fid = req.match["id"]
        if fid not in self.files:
            return self.fail(404, f"No such File object: {fid}", "file_not_found", "id")
        del self.files[fid]
        self.deleted_files.append(fid)
        return Response(200, {"id": fid, "object": "file", "deleted": True})

    def h_content(self, req):
        self.settle_all()
        fid = req.match["id"]
        if fid not in self.files:
            return self.fail(404, f"No such File object: {fid}", "file_not_found", "id")
        data = self.files[fid]["content"]
        n = self.config["content_chunk"]
        return Response(200, (data[i:i + n] for i in range(0, len(data), n)),
                        content_type="application/octet-stream")

    # --- batches --------------------------------------------------------------------------
    def h_create(self, req):
        try:
            body = req.json()
        except ValueError:
            return self.fail(400, "We could not parse the JSON body of your request.",
                             "invalid_json")
        if not isinstance(body, dict):
            return self.fail(400, "The body must be an object.", "invalid_request")
        self.creates.append(body)
        return self.create(body)

    def create(self, body):
        for key in ("input_file_id", "endpoint", "completion_window"):
            if key not in body:
                return self.fail(400, f"Missing required parameter: '{key}'.",
                                 "missing_required_parameter", key)
        if not self.valid_endpoint(body["endpoint"]):
            return self.fail(400, f"Invalid value: '{body['endpoint']}'. Supported values are: "
                             + ", ".join(f"'{e}'" for e in ENDPOINTS) + ".", "invalid_value",
                             "endpoint")
        if body["completion_window"] != "24h":
            return self.fail(400, "Invalid value for 'completion_window'. Supported: '24h'.",
                             "invalid_value", "completion_window")
        meta = body.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict) or len(meta) > 16 or any(
                    not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or
                    len(v) > 512 for k, v in meta.items()):
                return self.fail(400, "Invalid 'metadata': at most 16 string pairs, keys up "
                                 "to 64 and values up to 512 characters.", "invalid_value",
                                 "metadata")
        fid = body["input_file_id"]
        f = self.files.get(fid)
        if f is None:
            return self.fail(400, f"Invalid 'input_file_id': '{fid}'. File not found.",
                             "invalid_value", "input_file_id")
        if f["obj"]["purpose"] != "batch":
            return self.fail(400, "The input file must be uploaded with purpose 'batch'.",
                             "invalid_value", "input_file_id")
        bad = self.check_file_ready(fid)
        if bad:
            return bad
        out_exp = self.parse_expiry(body.get("output_expires_after"), "output_expires_after")
        if isinstance(out_exp, Response):
            return out_exp
        requests, errors, model = self.validate(f["content"], body["endpoint"])
        skip = self.config["token_limit_skip"] > 0
        if skip:
            self.config["token_limit_skip"] -= 1
        elif self.config["token_limit_at_create"] > 0:
            self.config["token_limit_at_create"] -= 1
            return self.fail(400, "token_limit_exceeded: Enqueued token limit reached for "
                             f"{model}. Limit: 2,000,000 enqueued tokens. Please try again "
                             "once some in_progress batches have been completed.",
                             "token_limit_exceeded")
        bid = self.new_batch_id()
        if not skip and not errors and self.config["token_limit_batches"] > 0:
            self.config["token_limit_batches"] -= 1
            errors = [{"code": "token_limit_exceeded", "line": None, "param": None,
                       "message": f"Enqueued token limit reached for {model} in "
                       "organization org-fake. Limit: 2,000,000 enqueued tokens. Please try "
                       "again once some in_progress batches have been completed."}]
            self.token_limited.append(bid)
        b = Batch(bid, self.now(), body, requests, errors, model, self.config,
                  random.Random(bid))
        b.output_expires_s = out_exp
        self.batches[bid] = b
        return Response(200, self.batch_json(b, create=True))

    def check_file_ready(self, fid):
        return None

    def validate(self, content, endpoint):
        """(requests, errors or None, model) for an input file (A.7, B.6)."""
        errors, requests, seen = [], [], {}
        model = None

        def err(code, message, line, param=None):
            errors.append({"code": code, "message": message, "param": param, "line": line})

        if content.startswith(b"\xef\xbb\xbf"):
            err("invalid_json_line", "This line is not parseable as valid JSON.", 1)
            return [], errors, None
        lines = content.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for no, raw in enumerate(lines, 1):
            if len(errors) >= 10:
                break
            text = raw.rstrip(b"\r")
            if not text.strip():
                if not self.config["blank_lines_ok"]:
                    err("invalid_json_line", "This line is not parseable as valid JSON.", no)
                continue
            try:
                o = json.loads(text)
            except ValueError:
                err("invalid_json_line", "This line is not parseable as valid JSON.", no)
                continue
            if not isinstance(o, dict) or not isinstance(o.get("custom_id"), str):
                err("invalid_request", "The request is missing 'custom_id'.", no, "custom_id")
                continue
            if o.get("method") != "POST":
                err("invalid_request", "Only POST requests are supported.", no, "method")
                continue
            if not isinstance(o.get("url"), str) or not self.same_url(o["url"], endpoint):
                err("url_mismatch", f"The url '{o.get('url')}' does not match the batch "
                    f"endpoint '{endpoint}'.", no, "url")
                continue
            body = o.get("body")
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                err("invalid_request", "The request body must be an object with a 'model'.",
                    no, "body.model")
                continue
            if body.get("invalid") is True:
                err("invalid_request", "The request body is invalid (fake 'invalid').", no,
                    "body")
                continue
            if not self.model_known(body["model"]):
                err("model_not_found", f"The model `{body['model']}` does not exist or you "
                    "do not have access to it.", no, "body.model")
                continue
            if model is None:
                model = body["model"]
            elif body["model"] != model:
                err("model_mismatch", "All requests in a batch must use the same model.", no,
                    "body.model")
                continue
            if o["custom_id"] in seen:
                err("duplicate_custom_id", f"The custom_id '{o['custom_id']}' is not unique "
                    f"(first on line {seen[o['custom_id']]}).", no, "custom_id")
                continue
            seen[o["custom_id"]] = no
            requests.append({"custom_id": o["custom_id"], "body": body,
                             "fail": body["model"] == "fail-request" or
                             body.get("fail") is True,
                             "bad": chat_body_error(endpoint, body)})
        if not errors and not requests:
            err("empty_file", "The input file is empty. Please ensure that the batch contains "
                "at least one request.", None)
        if len(requests) > self.config["max_requests"]:
            err("too_many_tasks", f"The batch has {len(requests)} requests; the maximum is "
                f"{self.config['max_requests']}.", None)
        return requests, errors or None, model

    def settle(self, b):
        """Writes a batch's output and error files the first time it is seen ended."""
        if b.settled:
            return
        now = self.now()
        status, _ = b.phase(now)
        if status not in ("completed", "cancelled", "expired", "failed"):
            return
        b.settled = True
        if status == "failed" or (status == "cancelled" and b.cancel_at < b.v_end):
            return
        out, errs = [], []
        why = "batch_expired" if status == "expired" else "batch_cancelled"
        for i, r in enumerate(b.requests):
            rid = "batch_req_" + b.rng.getrandbits(128).to_bytes(16, "big").hex()
            if not b.ran(i, now):
                errs.append({"id": rid, "custom_id": r["custom_id"], "response": None,
                             "error": {"code": why, "message":
                                       "This request could not be executed before the "
                                       "completion window expired." if why == "batch_expired"
                                       else "This request was cancelled before it ran."}})
            elif r.get("bad"):
                # A body the endpoint refuses is that request's 400, as when sent alone.
                param, message = r["bad"]
                errs.append({"id": rid, "custom_id": r["custom_id"], "response": {
                    "status_code": 400, "request_id": self.request_id(),
                    "body": self.error_body(400, message, code="invalid_value", param=param)},
                    "error": None})
            elif r["fail"]:
                errs.append({"id": rid, "custom_id": r["custom_id"], "response": {
                    "status_code": 400, "request_id": self.request_id(),
                    "body": self.error_body(400, "The request failed (fake 'fail-request').",
                                            code="invalid_value", param="model")},
                    "error": None})
            else:
                out.append({"id": rid, "custom_id": r["custom_id"], "response": {
                    "status_code": 200, "request_id": self.request_id(),
                    "body": self.result_body(b, r, now)}, "error": None})
        if self.config["shuffle_output"]:
            b.rng.shuffle(out)
            b.rng.shuffle(errs)
        exp = getattr(b, "output_expires_s", None)
        if out:
            b.output_file_id = self.add_file(
                "".join(dumps(x) + "\n" for x in out).encode(),
                f"{b.id}_output.jsonl", "batch_output", fid=self.output_file_id(),
                expires_s=exp)
        if errs or self.empty_error_file():
            b.error_file_id = self.add_file(
                "".join(dumps(x) + "\n" for x in errs).encode(),
                f"{b.id}_error.jsonl", "batch_output", fid=self.output_file_id(),
                expires_s=exp)

    def output_file_id(self):
        return self.new_file_id()

    def empty_error_file(self):
        return False

    def settle_all(self):
        for b in self.batches.values():
            self.settle(b)

    def counts(self, b, status, now):
        if status == "validating" or (status == "cancelled" and b.cancel_at < b.v_end) or \
                status == "failed":
            return {"total": 0, "completed": 0, "failed": 0}
        ran = [i for i in range(len(b.requests)) if b.ran(i, now)]
        failed = sum(1 for i in ran if b.requests[i]["fail"] or b.requests[i].get("bad"))
        return {"total": len(b.requests), "completed": len(ran) - failed, "failed": failed}

    def batch_json(self, b, create=False):
        """The Batch object (A.5), every field of the OpenAPI schema."""
        self.settle(b)
        now = self.now()
        status, t = b.phase(now)
        counts = self.counts(b, status, now)
        done = counts["completed"] + counts["failed"]
        usage = None
        if status not in ("validating", "failed"):
            usage = {"input_tokens": 10 * done, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": 5 * counts["completed"],
                     "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": 10 * done + 5 * counts["completed"]}
        obj = {
            "id": b.id, "object": "batch", "endpoint": b.endpoint, "model": b.model,
            "errors": {"object": "list", "data": b.errors} if status == "failed" else None,
            "input_file_id": b.input_file_id, "completion_window": "24h",
            "status": status, "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id, "created_at": b.created,
            "in_progress_at": t.get("in_progress_at"), "expires_at": b.expires,
            "finalizing_at": t.get("finalizing_at"), "completed_at": t.get("completed_at"),
            "failed_at": t.get("failed_at"), "expired_at": t.get("expired_at"),
            "cancelling_at": t.get("cancelling_at"), "cancelled_at": t.get("cancelled_at"),
            "request_counts": counts, "usage": usage, "metadata": b.metadata,
        }
        return self.to_wire(obj, create)

    def to_wire(self, obj, create):
        for k in list(obj):
            if k.endswith("_at"):
                obj[k] = self.wire_time(obj[k])
        return obj

    def h_list(self, req):
        try:
            limit = int(req.query.get("limit", self.config["list_default_limit"]))
        except ValueError:
            return self.fail(400, "Invalid 'limit'.", "invalid_value", "limit")
        if not 1 <= limit <= 100:
            return self.fail(400, "Invalid 'limit': must be between 1 and 100.",
                             "invalid_value", "limit")
        limit = min(limit, self.config["list_max_limit"])
        ids = list(reversed(list(self.batches)))  # newest first
        after = req.query.get("after")
        if after:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        page = [self.batch_json(self.batches[i]) for i in ids[:limit]]
        return Response(200, {"object": "list", "data": page,
                              "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None,
                              "has_more": len(ids) > limit})

    def h_get(self, req):
        b = self.batches.get(req.match["id"])
        if b is None:
            return self.fail(404, f"No batch found with id '{req.match['id']}'.",
                             "not_found")
        return Response(200, self.batch_json(b))

    def h_cancel(self, req):
        b = self.batches.get(req.match["id"])
        if b is None:
            return self.fail(404, f"No batch found with id '{req.match['id']}'.",
                             "not_found")
        status, _ = b.phase(self.now())
        if status in ("completed", "failed", "expired", "cancelled"):
            if self.config["cancel_terminal"] == "error":
                return self.fail(400, f"Cannot cancel a batch with status '{status}'.",
                                 "invalid_request")
        elif b.cancel_at is None:
            b.cancel_at = self.now()
        return Response(200, self.batch_json(b))

    # --- control --------------------------------------------------------------------------
    def create_batch(self, lines, endpoint="/v1/chat/completions", metadata=None):
        """Creates a batch as another client would (SDK, console); returns its id."""
        content = "".join(line + "\n" for line in lines).encode()
        with self.lock:
            fid = self.add_file(content, "elsewhere.jsonl", "batch")
            body = {"input_file_id": fid, "endpoint": endpoint, "completion_window": "24h"}
            if metadata is not None:
                body["metadata"] = metadata
            resp = self.create(body)
            if resp.status != 200:
                raise ValueError(resp.body)
            return json.loads(resp.body)["id"]

    def cancel_batch(self, bid):
        with self.lock:
            b = self.batches[bid]
            if b.cancel_at is None:
                b.cancel_at = self.now()

    def advance(self, seconds):
        with self.lock:
            self.clock_offset += seconds

    def batch_status(self, bid):
        with self.lock:
            return self.batches[bid].phase(self.now())[0]

    def control(self, req, what):
        if what == "batches" and req.method == "POST":
            body = req.json()
            return Response(200, {"id": self.create_batch(
                body["lines"], body.get("endpoint", "/v1/chat/completions"),
                body.get("metadata"))})
        m = re.match(r"batches/([^/]+)/cancel$", what)
        if m and req.method == "POST":
            self.cancel_batch(m.group(1))
            return Response(200, {"ok": True})
        if what == "advance" and req.method == "POST":
            self.advance(float(req.json()["seconds"]))
            return Response(200, {"ok": True})
        if what == "stats" and req.method == "GET":
            with self.lock:
                return Response(200, {"batches": list(self.batches),
                                      "files": [f["obj"] for f in self.files.values()],
                                      "deleted_files": self.deleted_files,
                                      "uploads": len(self.uploads)})
        return None


class FakeAzure(FakeOpenAI):
    """Azure OpenAI: see the module docstring for its differences."""
    name = "azure"
    prefixes = ("/openai", "/openai/v1")

    def default_config(self):
        c = super().default_config()
        c.update({
            "api_key": "azure-test-key",
            "tokens": ["entra-test-token"],  # bearer tokens accepted besides the key
            "api_versions": ["2024-10-21", "2025-03-01-preview", "2025-04-01-preview"],
            "deployments": ["gpt-4o-mini-batch"],
            "expire_s": 0,                   # Azure does not expire batches (B.4)
            "max_requests": 100000,
            "file_status": "processed",
            "file_pending_s": 0.4,           # "pending" this long after an upload (B.3)
            "capitalise": True,
            "iso_times": True,
            "line_as_string": True,
            "errors_as_object": False,       # errors.data one object, as the 2024-10-21 spec
            "empty_error_file": True,
            # Azure: 14 to 30 days, files never expire unless told, and at most 500 files
            # without an expiry per resource, 10,000 with one (B.3, B.8)
            "expires_min_s": 14 * 86400,
            "default_expires_s": 0,
            "max_files_no_expiry": 500,
            "max_files": 10000,
        })
        return c

    def error_body(self, status, message, kind=None, code=None, param=None):
        return {"error": {"code": code or kind or str(status), "message": message}}

    def rate_limited_response(self, retry_after, limit, window):
        # https://learn.microsoft.com/azure/ai-foundry/openai/quotas-limits: 429 with
        # retry-after and retry-after-ms, the wait also in the message.
        wait = max(1, math.ceil(retry_after))
        return Response(429, self.error_body(
            429, "Requests to the Batch Operation under Azure OpenAI API have exceeded call "
            f"rate limit of your current pricing tier. Please retry after {wait} seconds.",
            code="429"), {"retry-after": str(wait), "retry-after-ms": str(wait * 1000)})

    def is_dated(self, req):
        return not req.path.startswith("/openai/v1/")

    def check_version(self, req):
        if not self.is_dated(req):
            return None
        v = req.query.get("api-version")
        if v is None:
            return self.fail(404, "Resource not found", "404")
        if v not in self.config["api_versions"]:
            return self.fail(400, f"API version not supported: {v}", "BadRequest")
        return None

    def check_auth(self, req):
        key = req.headers.get("api-key")
        auth = req.headers.get("Authorization") or ""
        if key and key == self.config["api_key"]:
            return None
        if auth.startswith("Bearer ") and auth[7:] in self.config["tokens"]:
            return None
        return self.fail(401, "Access denied due to invalid subscription key or wrong API "
                         "endpoint. Make sure to provide a valid key for an active "
                         "subscription and use a correct regional API endpoint for your "
                         "resource.", "401")

    def new_file_id(self):
        return "file-" + os.urandom(16).hex()

    def output_file_id(self):
        return "file-" + str(uuid.uuid4())

    def new_batch_id(self):
        return "batch_" + str(uuid.uuid4())

    def upload_status(self, req):
        return 201 if self.is_dated(req) else 200

    def request_id(self):
        return str(uuid.uuid4())

    def wire_time(self, t):
        if t is None:
            return None
        if not self.config["iso_times"]:
            return int(t)
        d = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
        return d.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"

    def valid_endpoint(self, ep):
        return ep in ENDPOINTS or "/v1" + ep in ENDPOINTS

    def same_url(self, url, endpoint):
        def norm(u):
            return u if u.startswith("/v1/") else "/v1" + u
        return norm(url) == norm(endpoint)

    def model_known(self, model):
        return model != "fail-validation" and model in self.config["deployments"]

    def empty_error_file(self):
        return self.config["empty_error_file"]

    def check_file_ready(self, fid):
        st = self.file_obj(fid)["status"]
        if st != "processed":
            return self.fail(400, f"The input file '{fid}' is not ready yet (status "
                             f"'{st}'). Wait until it is 'processed'.", "invalidPayload")
        return None

    def result_body(self, b, r, now):
        body = super().result_body(b, r, now)
        if "choices" in body:
            body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"}}}]
            for c in body["choices"]:
                c["content_filter_results"] = {"hate": {"filtered": False, "severity": "safe"}}
        return body

    def to_wire(self, obj, create):
        status = obj["status"]
        obj = super().to_wire(obj, create)
        if self.config["capitalise"]:
            obj["status"] = AZURE_STATUS[status]
        if status == "validating":
            obj["request_counts"] = None
        if status not in ("completed", "cancelled", "expired", "failed"):
            obj["output_file_id"] = obj["output_file_id"] or ""
            obj["error_file_id"] = obj["error_file_id"] or ""
        if create:
            obj["endpoint"] = None
        if obj["errors"]:
            data = [dict(e) for e in obj["errors"]["data"]]
            if self.config["line_as_string"]:
                for e in data:
                    if e.get("line") is not None:
                        e["line"] = str(e["line"])
            obj["errors"] = {"object": "list",
                             "data": data[0] if self.config["errors_as_object"] else data}
        return obj


def parse_multipart(body, boundary):
    """({field: value}, {field: (filename, content type, bytes)}) of a multipart/form-data
    body (RFC 7578). Raises ValueError when it is malformed."""
    delim = b"--" + boundary
    if not body.startswith(delim):
        raise ValueError("does not start with the boundary")
    parts = body.split(b"\r\n" + delim)
    first = parts[0][len(delim):]
    parts = [first] + parts[1:]
    fields, files = {}, {}
    for i, part in enumerate(parts):
        if part.startswith(b"--"):
            if i != len(parts) - 1 or part not in (b"--", b"--\r\n"):
                raise ValueError("data after the closing boundary")
            return fields, files
        if not part.startswith(b"\r\n"):
            raise ValueError("boundary not followed by CRLF")
        head, sep, data = part[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("part without a header block")
        headers = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode("utf-8").partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'\bfilename="([^"]*)"', disp)
        if not disp.startswith("form-data") or not name:
            raise ValueError("part without Content-Disposition: form-data; name=")
        if filename:
            files[name.group(1)] = (filename.group(1), headers.get("content-type"), data)
        else:
            fields[name.group(1)] = data.decode("utf-8")
    raise ValueError("no closing boundary")


CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def chat_body_error(endpoint, body):
    """(param, message) when a /v1/chat/completions body would be refused with a 400, as
    the Chat Completions API does (https://platform.openai.com/docs/api-reference/chat/create):
    messages a non-empty list of {role, content}, max_tokens and max_completion_tokens
    positive integers, temperature within [0, 2]. None when acceptable or another
    endpoint."""
    ep = endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint
    if ep != "/v1/chat/completions":
        return None
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return ("messages", "Missing required parameter: 'messages'.")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
            return (f"messages[{i}].role", f"Invalid value for 'messages[{i}].role'.")
        if "content" not in m and m.get("role") != "assistant":
            return (f"messages[{i}].content",
                    f"Missing required parameter: 'messages[{i}].content'.")
    for k in ("max_tokens", "max_completion_tokens"):
        v = body.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            return (k, f"Invalid '{k}': integer below minimum value.")
    t = body.get("temperature")
    if t is not None and (not isinstance(t, (int, float)) or not 0 <= t <= 2):
        return ("temperature", "Invalid 'temperature': must be between 0 and 2.")
    return None


def last_text(body):
    """The text of the last user message (chat) or the input (responses, embeddings)."""
    msgs = body.get("messages")
    if isinstance(msgs, list) and msgs:
        c = msgs[-1].get("content") if isinstance(msgs[-1], dict) else None
        if isinstance(c, str):
            return c
        if isinstance(c, list):
            return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    inp = body.get("input") or body.get("prompt")
    if isinstance(inp, str):
        return inp
    return ""


def result_body(endpoint, body, now, rng):
    """A realistic response body of the endpoint, echoing the request's text."""
    model = body.get("model")
    text = last_text(body)
    ep = endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint
    tok = max(1, len(text.split()))
    if ep == "/v1/chat/completions":
        return {"id": "chatcmpl-" + rng.getrandbits(96).to_bytes(12, "big").hex(),
                "object": "chat.completion", "created": int(now), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": tok,
                          "total_tokens": 10 + tok},
                "service_tier": "default", "system_fingerprint": "fp_fake"}
    if ep == "/v1/embeddings":
        return {"object": "list", "data": [{"object": "embedding", "index": 0,
                                            "embedding": [0.25, -0.5, 0.125, 0.0]}],
                "model": model, "usage": {"prompt_tokens": tok, "total_tokens": tok}}
    if ep == "/v1/responses":
        return {"id": "resp_" + rng.getrandbits(128).to_bytes(16, "big").hex(),
                "object": "response", "created_at": int(now), "status": "completed",
                "model": model, "output": [{"type": "message", "id": "msg_fake",
                                            "status": "completed", "role": "assistant",
                                            "content": [{"type": "output_text", "text": text,
                                                         "annotations": []}]}],
                "usage": {"input_tokens": 10, "output_tokens": tok,
                          "total_tokens": 10 + tok}}
    return {"id": "fake-" + rng.getrandbits(64).to_bytes(8, "big").hex(), "object": "result",
            "model": model, "text": text}
