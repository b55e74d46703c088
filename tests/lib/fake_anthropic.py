"""A fake Anthropic Message Batches API (https://docs.anthropic.com/en/api/creating-message-batches),
standard library only.

Behaves like the real service as far as the spec knows it, so batchfs can be tested offline:

  POST   /v1/messages/batches                 create: validated per spec 4.1, 200 + MessageBatch
  GET    /v1/messages/batches                 list: newest first, limit/after_id/before_id
  GET    /v1/messages/batches/{id}            retrieve
  POST   /v1/messages/batches/{id}/cancel     in_progress -> canceling -> ended
  DELETE /v1/messages/batches/{id}            only once ended
  GET    /v1/messages/batches/{id}/results    JSONL, chunked, in processing order (not request
                                              order), 404 "... has no available results." before

Every answer carries `request-id: req_<24 base58>`; errors use the envelope {"type": "error",
"error": {"type", "message"}, "request_id"} with the same id; 404s add `x-should-retry: false`,
429/5xx of the fake's own making `x-should-retry: true`. x-api-key (or Authorization: Bearer) and
anthropic-version are required; anthropic-beta, ?beta=true, Accept and X-Stainless-* are ignored.
With `bearer_only`, as for an organisation on workload identity federation, only
`Authorization: Bearer` with a token given to add_bearer_token() and not expired is accepted
(an x-api-key is refused with 401); revoke_bearer_tokens() plays an early revocation.

Time is lazy: a batch's requests finish one by one over `processing_s` seconds after its creation,
in a shuffled order; whatever has not finished when a cancel arrives is `canceled` once the batch
ends (`cancel_drain_s` later), whatever has not finished at `expires_at` is `expired`; results are
archived `archive_s` after creation. Nothing runs in the background: every answer is computed
from the timestamps. `advance(s)` moves the fake's clock (and its Date header) by s seconds,
either way, to play a skewed server. Times are RFC 3339 with microseconds and `Z` (the docs'
form); `time_suffix="+00:00"` gives what the 2024-25 wire showed.

Params are not checked at create (spec 4.1 "Deferred"): a bad model, missing or bad messages or
max_tokens, stream=true, max_tokens above the model cap or unknown fields become `errored`
results. A succeeded result is a realistic Message whose text echoes the last user message.

Known gaps (the spec has no answer, marked [I] there): messages for out-of-range cursors (an
unknown cursor gives an empty page), both cursors at once (400), cancel of an ended batch (200,
no change), results of an archived batch (404 like "not ready"), 413 body shape (full envelope).
No rate limiting of its own (inject 429s with faults), no workspace scoping, no user profiles.

Lost answers: `create_hold_s` creates the batch, then holds the answer (a client that leaves
meanwhile has a batch it never heard of); `create_delay_s` waits before acting and drops the
create if the client leaves first (nothing is made).

Test surface beyond the base (fake_server.FakeServer): create_batch(requests, age_s) as another
client would, batches_created (creates ever made, by any client), create_bytes (create body
bytes received, complete bodies or not), batch_ids(), batch(id),
requests_of(id), result_lines(id), results_served(id), cancel_batch(id), expire(id),
archive(id), advance(seconds); over HTTP: POST /_control/batches {"requests"}, GET
/_control/stats, POST /_control/batches/{id}/{cancel,expire,archive}, POST /_control/advance
{"seconds"}.
"""
import datetime
import email.utils
import gzip
import json
import math
import random
import re
import select
import socket
import threading
import time

from fake_server import FakeServer, Response, _Handler

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
PATH = "/v1/messages/batches"
ID = r"(?P<id>[^/]+)"
# Bodies above this are refused without being read (the connection is closed instead).
DRAIN_MAX = 16 << 20

# Fields of a Messages create body that a batch accepts (spec 4); anything else is an errored
# result "X: Extra inputs are not permitted" (stream and friends have their own messages).
PARAMS_KNOWN = {
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "thinking", "metadata",
    "stop_sequences", "temperature", "top_p", "top_k", "output_config", "container",
    "service_tier", "mcp_servers", "context_management", "inference_geo", "stream",
}
PARAMS_NOT_IN_BATCH = {"speed", "store", "previous_thread_event_id", "cache_hint",
                       "context_hint"}

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error",
    409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}
# What the real service says for the statuses a test injects without a message of its own.
CANNED = {
    408: "Request timed out",
    409: "Conflict",
    429: "Number of requests has exceeded your rate limit. Please try again later.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Request timed out",
    529: "Overloaded",
}


def b58(rng, n):
    return "".join(rng.choice(B58) for _ in range(n))


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Batch:
    """One batch's facts; everything else is derived from them and the clock."""

    def __init__(self, bid, created, requests, cfg, seed):
        self.id = bid
        self.created = created
        self.requests = requests  # [(custom_id, params)] in request order
        self.rng = random.Random(seed)
        n = len(requests)
        order = list(range(n))
        self.rng.shuffle(order)
        if n > 1 and order == sorted(order):
            order.reverse()  # "order is not the request order" (spec 2.6), even for tiny batches
        self.order = order  # processing order: order[k] is the k-th request to finish
        step = cfg["processing_s"] / n
        self.done_at = [0.0] * n
        for k, i in enumerate(order):
            self.done_at[i] = created + step * (k + 1)
        self.expires = created + cfg["expire_s"]  # shown as expires_at
        self.expiry = self.expires  # when unfinished requests do expire (expire() moves it)
        self.archive = created + cfg["archive_s"]
        self.cancel_at = None
        self.drain_s = cfg["cancel_drain_s"]
        self.lines = None  # result lines (bytes, no terminator), once ended
        self.msg_ids = [f"msg_01{b58(self.rng, 22)}" for _ in range(n)]

    def stop_at(self):
        """When processing stops: a cancel or the expiry, whichever comes first."""
        return min(self.cancel_at, self.expiry) if self.cancel_at is not None \
            else self.expiry

    def ended_at(self):
        natural = max(self.done_at)
        stop = self.stop_at()
        if natural <= stop:
            return natural
        if self.cancel_at is not None and self.cancel_at < self.expiry:
            return self.cancel_at + self.drain_s
        return self.expiry

    def fate(self, i):
        """succeeded/errored (ran), canceled or expired: request i's outcome at the end."""
        if self.done_at[i] <= self.stop_at():
            return "ran"
        if self.cancel_at is not None and self.cancel_at < self.expiry:
            return "canceled"
        return "expired"


class _ClockHandler(_Handler):
    """The Date header follows the fake's clock (advance() moves both), as a server's
    clock does: clients may use it to learn the skew between the two."""

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(self.server.fake.now(), usegmt=True)


class FakeAnthropic(FakeServer):
    name = "anthropic"

    def __init__(self, port=0, **config):
        super().__init__(port, **config)
        self.httpd.RequestHandlerClass = _ClockHandler

    def default_config(self):
        return {
            "api_key": "sk-ant-api03-fake-test-key",  # None: any non-empty key
            # Short-lived OAuth bearer tokens (workload identity federation): when True, only
            # `Authorization: Bearer` with a token given to add_bearer_token() and not yet
            # expired is accepted, and an x-api-key is refused.
            "bearer_only": False,
            "versions": ["2023-06-01", "2026-10-21"],
            "processing_s": 1.0,        # creation to the last request done
            "cancel_drain_s": 0.3,      # canceling -> ended
            "expire_s": 24 * 3600,      # expires_at - created_at
            "archive_s": 29 * 24 * 3600,
            "live_counts": False,       # True: counters move during processing (spec 3, [C2])
            "max_body_bytes": 256 * 1000 * 1000,
            "max_requests": 100000,
            "max_output_tokens": 64000,
            "list_default_limit": 20,
            "results_chunk": 4096,      # bytes per chunk of the results stream
            "results_final_newline": False,
            "results_crlf": False,
            "time_suffix": "Z",         # or "+00:00", as the 2024-25 wire showed
            "create_delay_s": 0.0,      # wait before acting on a create (dropped if the
                                        # client leaves meanwhile: nothing is created)
            "create_hold_s": 0.0,       # create, then wait this long before answering
            "poll_retry_after": None,   # retry-after on GET of an unfinished batch ([C2])
            "chunked_json": True,       # JSON answers with chunked encoding, like the API
            "gzip": False,              # compress answers for clients that accept gzip
        }

    def reset_state(self):
        with self.lock:
            self.batches = {}  # id -> Batch, in creation order
            self.deleted = set()
            self.batches_created = 0
            self.create_bytes = 0  # create body bytes received, complete or not
            self.clock_offset = 0.0
            self._tl = threading.local()
            self.bearer_tokens = {}  # token -> expiry (time.time())
            self.bearer_refused = 0
            self._rng = random.Random()

    def routes(self):
        self.route("POST", PATH, self._api(self.h_create))
        self.route("GET", PATH, self._api(self.h_list))
        self.route("GET", f"{PATH}/{ID}", self._api(self.h_get))
        self.route("DELETE", f"{PATH}/{ID}", self._api(self.h_delete))
        self.route("POST", f"{PATH}/{ID}/cancel", self._api(self.h_cancel))
        self.route("GET", f"{PATH}/{ID}/results", self._api(self.h_results))

    # --- envelope, ids, time --------------------------------------------------------------
    def now(self):
        return time.time() + self.clock_offset

    def next_request_id(self, prefix="req_"):
        rid = getattr(self._tl, "rid", None)
        if rid:
            self._tl.rid = None
            return rid
        with self.lock:
            return "req_011C" + b58(self._rng, 20)

    def error_body(self, status, message, kind=None):
        # The same id goes into the request-id header of this answer (next_request_id).
        rid = self.next_request_id()
        self._tl.rid = rid
        if message == "injected fault":
            message = CANNED.get(status, message)
        return {"type": "error",
                "error": {"type": kind or ERROR_TYPES.get(status, "api_error"),
                          "message": message},
                "request_id": rid}

    def error(self, status, message, kind=None, headers=None):
        headers = dict(headers or {})
        if status == 404:
            headers.setdefault("x-should-retry", "false")
        elif status == 429 or status >= 500:
            headers.setdefault("x-should-retry", "true")
        return Response(status, compact(self.error_body(status, message, kind)), headers,
                        content_type="application/json")

    def rate_limited_response(self, retry_after, limit, window):
        # https://docs.anthropic.com/en/api/rate-limits: 429 rate_limit_error with
        # retry-after (seconds) and anthropic-ratelimit-requests-* (reset in RFC 3339).
        wait = max(1, math.ceil(retry_after))
        reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + wait))
        return self.error(429, "Number of requests has exceeded your rate limit "
                          "(https://docs.anthropic.com/en/api/rate-limits). Please reduce the "
                          "prompt length or the maximum tokens requested, or try again later.",
                          "rate_limit_error",
                          {"retry-after": str(wait),
                           "anthropic-ratelimit-requests-limit": str(limit),
                           "anthropic-ratelimit-requests-remaining": "0",
                           "anthropic-ratelimit-requests-reset": reset})

    def json(self, obj, headers=None, req=None):
        headers = dict(headers or {})
        data = self._encode(compact(obj), req, headers)
        body = iter([data]) if self.config["chunked_json"] else data
        return Response(200, body, headers, content_type="application/json")

    def _encode(self, data, req, headers):
        """gzip data when configured and the client accepts it."""
        if self.config["gzip"] and req is not None and \
                "gzip" in (req.headers.get("Accept-Encoding") or ""):
            headers["Content-Encoding"] = "gzip"
            return gzip.compress(data)
        return data

    def ts(self, t):
        if t is None:
            return None
        d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        return d.strftime("%Y-%m-%dT%H:%M:%S.%f") + self.config["time_suffix"]

    def _api(self, fn):
        """Authentication and version checks every API route shares (spec 9.1)."""
        def handler(req):
            key = req.headers.get("x-api-key")
            auth = req.headers.get("authorization") or ""
            if key is None and auth.lower().startswith("bearer "):
                key = auth[7:].strip()
            if self.config["bearer_only"]:
                tok = auth[7:].strip() if auth.lower().startswith("bearer ") else None
                with self.lock:
                    exp = self.bearer_tokens.get(tok)
                    ok = req.headers.get("x-api-key") is None and exp and time.time() < exp
                    if not ok:
                        self.bearer_refused += 1
                if not ok:
                    return self._refuse(req, 401, "invalid bearer token" if tok else
                                        "invalid x-api-key")
            else:
                want = self.config["api_key"]
                if not key:
                    return self._refuse(req, 401, "x-api-key header is required")
                if want is not None and key != want:
                    return self._refuse(req, 401, "invalid x-api-key")
            version = req.headers.get("anthropic-version")
            if not version:
                return self._refuse(req, 400, "anthropic-version: header is required")
            if version not in self.config["versions"]:
                return self._refuse(req, 400,
                                    f"anthropic-version: invalid version '{version}'")
            return fn(req)
        return handler

    def _refuse(self, req, status, message):
        if req.content_length is not None and req.content_length > DRAIN_MAX:
            self._close_unread(req)
        return self.error(status, message)

    @staticmethod
    def _close_unread(req):
        # Answer without reading a huge body, then close (what an edge proxy does).
        req._left = 0
        req._h.close_connection = True

    def _base(self, req):
        host = req.headers.get("Host") if req is not None else None
        return f"http://{host}" if host else self.url

    # --- the batch model ------------------------------------------------------------------
    def _new_batch(self, requests, age_s=0.0):
        with self.lock:
            rng = random.Random()
            bid = f"msgbatch_01{b58(rng, 22)}"
            b = Batch(bid, self.now() - age_s, requests, self.config, bid)
            self.batches[bid] = b
            self.batches_created += 1
            return b

    def _outcome(self, b, i):
        """The result object of request i, which ran (spec 5)."""
        cid, params = b.requests[i]
        err = self._check_params(params)
        if err:
            kind, message = err
            return {"type": "errored",
                    "error": {"type": "error",
                              "error": {"type": kind, "message": message,
                                        "details": {"error_visibility": "user_facing"}},
                              "request_id": None}}
        text = last_user_text(params["messages"])
        words = text.split()
        stop = "end_turn"
        if len(words) > params["max_tokens"]:
            text = " ".join(words[:params["max_tokens"]])
            words = text.split()
            stop = "max_tokens"
        in_chars = len(json.dumps(params["messages"])) + len(json.dumps(params.get("system", "")))
        msg = {"id": b.msg_ids[i], "type": "message", "role": "assistant",
               "model": params["model"],
               "content": [{"type": "text", "text": text}],
               "stop_reason": stop, "stop_sequence": None,
               "usage": {"input_tokens": max(1, in_chars // 4),
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                         "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                            "ephemeral_1h_input_tokens": 0},
                         "output_tokens": max(1, len(words)), "service_tier": "batch",
                         "inference_geo": "not_available"}}
        return {"type": "succeeded", "message": msg}

    def _check_params(self, p):
        """None, or (error type, message) for params the API refuses when it runs them."""
        for k in p:
            if k in PARAMS_NOT_IN_BATCH:
                return ("invalid_request_error",
                        f"{k}: this parameter is not supported in the Message Batches API")
            if k not in PARAMS_KNOWN:
                return ("invalid_request_error", f"{k}: Extra inputs are not permitted")
        if p.get("stream") is True:
            return ("invalid_request_error",
                    '"stream=True" is not supported in the Message Batches API')
        model = p.get("model")
        if "model" not in p:
            return ("invalid_request_error", "model: Field required")
        if not isinstance(model, str):
            return ("invalid_request_error", "model: Input should be a valid string")
        if "max_tokens" not in p:
            return ("invalid_request_error", "max_tokens: Field required")
        mt = p["max_tokens"]
        if not isinstance(mt, int) or isinstance(mt, bool):
            return ("invalid_request_error", "max_tokens: Input should be a valid integer")
        if mt < 1:
            return ("invalid_request_error", "max_tokens: must be greater than or equal to 1")
        msgs = p.get("messages")
        if "messages" not in p:
            return ("invalid_request_error", "messages: Field required")
        if not isinstance(msgs, list):
            return ("invalid_request_error", "messages: Input should be a valid list")
        if not msgs:
            return ("invalid_request_error", "messages: at least one message is required")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict):
                return ("invalid_request_error",
                        f"messages.{j}: Input should be a valid dictionary")
            if m.get("role") not in ("user", "assistant"):
                return ("invalid_request_error",
                        f"messages.{j}.role: Input should be 'user' or 'assistant'")
            if not isinstance(m.get("content"), (str, list)):
                return ("invalid_request_error", f"messages.{j}.content: Field required")
        if not model.startswith("claude-") or "does-not-exist" in model:
            return ("not_found_error", f"model: {model}")
        cap = self.config["max_output_tokens"]
        if mt > cap:
            return ("invalid_request_error",
                    f"max_tokens: {mt} > {cap}, which is the maximum allowed number of "
                    f"output tokens for {model}")
        return None

    def _lines(self, b):
        """Every result line of an ended batch, as served: requests that ran in the order they
        finished, then the canceled or expired ones (swept up at the end)."""
        if b.lines is None:
            ran, swept = [], []
            for i in b.order:
                fate = b.fate(i)
                result = self._outcome(b, i) if fate == "ran" else {"type": fate}
                (ran if fate == "ran" else swept).append(
                    compact({"custom_id": b.requests[i][0], "result": result}))
            b.lines = ran + swept
        return b.lines

    def _counts(self, b, now, ended):
        c = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for i in range(len(b.requests)):
            fate = b.fate(i)
            done = ended or (self.config["live_counts"] and fate == "ran" and
                             b.done_at[i] <= now)
            if not done:
                c["processing"] += 1
            elif fate == "ran":
                c[self._outcome(b, i)["type"]] += 1
            else:
                c[fate] += 1
        return c

    def _view(self, b, req=None):
        """The MessageBatch object (spec 3), field order as on the wire."""
        now = self.now()
        ended_at = b.ended_at()
        ended = now >= ended_at
        if ended:
            status = "ended"
        elif b.cancel_at is not None and now >= b.cancel_at:
            status = "canceling"
        else:
            status = "in_progress"
        archived = ended and now >= b.archive
        return {
            "id": b.id, "type": "message_batch", "processing_status": status,
            "request_counts": self._counts(b, now, ended),
            "ended_at": self.ts(ended_at) if ended else None,
            "created_at": self.ts(b.created),
            "expires_at": self.ts(b.expires),
            "archived_at": self.ts(b.archive) if archived else None,
            "cancel_initiated_at": self.ts(b.cancel_at),
            "results_url": f"{self._base(req)}{PATH}/{b.id}/results" if ended else None,
        }

    def _find(self, bid):
        return self.batches.get(bid) if bid not in self.deleted else None

    def _not_found(self, bid):
        return self.error(404, f"Message Batch {bid} not found.")

    # --- handlers -------------------------------------------------------------------------
    def h_create(self, req):
        cap = self.config["max_body_bytes"]
        n = req.content_length
        if n is not None and n > cap:
            if n > DRAIN_MAX:
                self._close_unread(req)
            return self.error(413, "Request exceeds the maximum size")
        parts, total = [], 0
        while True:
            p = req.read()
            if not p:
                break
            total += len(p)
            with self.lock:
                self.create_bytes += len(p)
            if total > cap:  # chunked upload over the cap
                self._close_unread(req)
                return self.error(413, "Request exceeds the maximum size")
            parts.append(p)
        raw = b"".join(parts)
        try:
            doc = json.loads(raw)
        except ValueError as e:
            return self.error(400, f"The request body is not valid JSON: {e}")
        problem = self._check_create(doc)
        if problem:
            return self.error(400, problem)
        # A server that drops a request whose client left before it acted: nothing is made.
        self._hold(req, self.config["create_delay_s"])
        b = self._new_batch([(r["custom_id"], r["params"]) for r in doc["requests"]])
        with self.lock:
            view = self._view(b, req)
        self._hold(req, self.config["create_hold_s"])
        if self._client_gone(req):
            raise ConnectionError("client went away before its create was answered")
        return self.json(view, req=req)

    def _check_create(self, doc):
        """The first synchronous refusal of a create body (spec 4.1), or None."""
        if not isinstance(doc, dict):
            return "Input should be a valid dictionary or object to extract fields from"
        if "requests" not in doc:
            return "requests: Field required"
        reqs = doc["requests"]
        if not isinstance(reqs, list):
            return "requests: Input should be a valid list"
        if not reqs:
            return "requests: List should have at least 1 item after validation, not 0"
        if len(reqs) > self.config["max_requests"]:
            return (f"requests: List should have at most {self.config['max_requests']} items "
                    f"after validation, not {len(reqs)}")
        for k in doc:
            if k != "requests":
                return f"{k}: Extra inputs are not permitted"
        for i, r in enumerate(reqs):
            where = f"requests.{i}"
            if not isinstance(r, dict):
                return f"{where}: Input should be a valid dictionary or object to extract " \
                    "fields from"
            if "custom_id" not in r:
                return f"{where}.custom_id: Field required"
            cid = r["custom_id"]
            if not isinstance(cid, str):
                return f"{where}.custom_id: Input should be a valid string"
            if len(cid) < 1:
                return f"{where}.custom_id: String should have at least 1 character"
            if len(cid) > 64:
                return f"{where}.custom_id: String should have at most 64 characters"
            if not CUSTOM_ID_RE.match(cid):
                return f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
            if "params" not in r:
                return f"{where}.params: Field required"
            if not isinstance(r["params"], dict):
                return f"{where}.params: Input should be a valid dictionary or object to " \
                    "extract fields from"
            for k in r:
                if k not in ("custom_id", "params"):
                    return f"{where}.{k}: Extra inputs are not permitted"
        seen = set()
        for r in reqs:
            if r["custom_id"] in seen:
                return ("requests: custom_id's must be unique within a batch. Duplicate "
                        f"custom_id found: {r['custom_id']}")
            seen.add(r["custom_id"])
        return None

    def _hold(self, req, seconds):
        """Waits (the body already read); a client that goes away ends the wait with
        ConnectionError, which the base logs as "client-gone"."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._client_gone(req, min(left, 0.05)):
                raise ConnectionError("client went away while its create was held")

    @staticmethod
    def _client_gone(req, wait=0.0):
        """True when the client closed its end (checked for up to wait seconds)."""
        sock = req._h.connection
        r, _, _ = select.select([sock], [], [], wait)
        if not r:
            return False
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data:
            time.sleep(wait)  # a next request already sent: the client is still there
        return not data

    def h_list(self, req):
        q = req.query
        limit = q.get("limit", str(self.config["list_default_limit"]))
        try:
            limit = int(limit)
        except ValueError:
            return self.error(400, "limit: Input should be a valid integer, unable to parse "
                              "string as an integer")
        if limit < 1:
            return self.error(400, "limit: Input should be greater than or equal to 1")
        if limit > 1000:
            return self.error(400, "limit: Input should be less than or equal to 1000")
        after, before = q.get("after_id"), q.get("before_id")
        if after and before:
            return self.error(400, "Only one of before_id and after_id may be given")
        with self.lock:
            newest = [b for b in reversed(list(self.batches.values()))
                      if b.id not in self.deleted]
            ids = [b.id for b in newest]
            if after:
                start = ids.index(after) + 1 if after in ids else len(ids)
                page = newest[start:start + limit]
                more = start + limit < len(ids)
            elif before:
                end = ids.index(before) if before in ids else 0
                page = newest[max(0, end - limit):end]
                more = end - limit > 0
            else:
                page = newest[:limit]
                more = len(ids) > limit
            data = [self._view(b, req) for b in page]
        return self.json({"data": data, "has_more": more,
                          "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None}, req=req)

    def h_get(self, req):
        bid = req.match.group("id")
        with self.lock:
            b = self._find(bid)
            if not b:
                return self._not_found(bid)
            view = self._view(b, req)
        headers = {}
        if self.config["poll_retry_after"] is not None and view["processing_status"] != "ended":
            headers["retry-after"] = str(self.config["poll_retry_after"])
        return self.json(view, headers, req)

    def h_cancel(self, req):
        bid = req.match.group("id")
        req.drain()  # the SDKs send no body; older clients sent {}
        with self.lock:
            b = self._find(bid)
            if not b:
                return self._not_found(bid)
            if b.cancel_at is None and self.now() < b.ended_at():
                b.cancel_at = self.now()
            return self.json(self._view(b, req), req=req)

    def h_delete(self, req):
        bid = req.match.group("id")
        with self.lock:
            b = self._find(bid)
            if not b:
                return self._not_found(bid)
            if self._view(b)["processing_status"] != "ended":
                return self.error(400, "In progress batches cannot be deleted. Consider "
                                  "canceling the batch instead.")
            self.deleted.add(bid)
        return self.json({"id": bid, "type": "message_batch_deleted"}, req=req)

    def h_results(self, req):
        bid = req.match.group("id")
        with self.lock:
            b = self._find(bid)
            if not b:
                return self._not_found(bid)
            view = self._view(b, req)
            if view["processing_status"] != "ended" or view["archived_at"]:
                return self.error(404, f"Message Batch {bid} has no available results.")
            data = self._served(b)
        headers = {"content-disposition": f'attachment; filename="{bid}_results.jsonl"'}
        data = self._encode(data, req, headers)
        step = max(1, int(self.config["results_chunk"]))
        chunks = (data[i:i + step] for i in range(0, len(data), step))
        return Response(200, chunks, headers, content_type="application/x-jsonl")

    def _served(self, b):
        sep = b"\r\n" if self.config["results_crlf"] else b"\n"
        data = sep.join(self._lines(b))
        return data + sep if self.config["results_final_newline"] else data

    # --- test surface ---------------------------------------------------------------------
    def add_bearer_token(self, token, lifetime=3600.0):
        with self.lock:
            self.bearer_tokens[token] = time.time() + lifetime

    def revoke_bearer_tokens(self):
        with self.lock:
            self.bearer_tokens.clear()

    def create_batch(self, requests, age_s=0.0):
        """Creates a batch as another client would (no HTTP), age_s seconds ago; requests:
        [{custom_id, params}] or JSONL text. Returns the batch id."""
        if isinstance(requests, str):
            requests = [json.loads(x) for x in requests.splitlines() if x.strip()]
        problem = self._check_create({"requests": requests})
        if problem:
            raise ValueError(problem)
        return self._new_batch([(r["custom_id"], r["params"]) for r in requests], age_s).id

    def batch(self, bid):
        """The MessageBatch the API would show now."""
        with self.lock:
            return self._view(self.batches[bid])

    def batch_ids(self):
        """Every batch id, oldest first."""
        with self.lock:
            return [b for b in self.batches if b not in self.deleted]

    def requests_of(self, bid):
        """The requests as the create body carried them: [(custom_id, params)]."""
        with self.lock:
            return list(self.batches[bid].requests)

    def results_served(self, bid):
        """The exact results body (bytes) the API serves for an ended batch."""
        with self.lock:
            return self._served(self.batches[bid])

    def result_lines(self, bid):
        """The result lines (bytes, no terminator), in the order served."""
        with self.lock:
            return list(self._lines(self.batches[bid]))

    def cancel_batch(self, bid):
        with self.lock:
            b = self.batches[bid]
            if b.cancel_at is None and self.now() < b.ended_at():
                b.cancel_at = self.now()

    def expire(self, bid):
        """Makes an unfinished batch hit its time limit now: what has not run is expired."""
        with self.lock:
            b = self.batches[bid]
            if self.now() < b.ended_at():
                b.expiry = self.now()
                b.lines = None

    def archive(self, bid):
        """Archives an ended batch's results now: archived_at set, results 404 (spec 7)."""
        with self.lock:
            b = self.batches[bid]
            if self.now() < b.ended_at():
                raise ValueError(f"batch {bid} has not ended")
            b.archive = self.now()

    def advance(self, seconds):
        with self.lock:
            self.clock_offset += float(seconds)

    def control(self, req, what):
        m = re.match(r"^batches/([^/]+)/(cancel|expire|archive)$", what)
        if m and req.method == "POST":
            if m.group(1) not in self.batches:
                return Response(404, {"error": "no such batch"})
            getattr(self, {"cancel": "cancel_batch", "expire": "expire",
                           "archive": "archive"}[m.group(2)])(m.group(1))
            return Response(200, self.batch(m.group(1)))
        if what == "batches" and req.method == "POST":
            try:
                bid = self.create_batch(req.json()["requests"])
            except (ValueError, KeyError, TypeError) as e:
                return Response(400, {"error": str(e)})
            return Response(200, self.batch(bid))
        if what == "stats" and req.method == "GET":
            with self.lock:
                return Response(200, {"batches_created": self.batches_created,
                                      "batches": len(self.batches) - len(self.deleted)})
        if what == "advance" and req.method == "POST":
            self.advance(req.json().get("seconds", 0))
            return Response(200, {"ok": True})
        return None


def last_user_text(messages):
    """The text of the last user message (a string, or its text blocks joined)."""
    for m in reversed(messages):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            return c
        return "".join(b.get("text", "") for b in c if isinstance(b, dict) and
                       b.get("type") == "text")
    return ""


KEY_ENV = "BFS_TEST_KEY"  # the environment variable a test remote reads its key from


def mount_remote(mount_factory, srv, remote="a", key=None, extra_opts=(), flags=(), **keys):
    """Mounts batchfs with one remote `remote` pointed at the fake srv, its key (the fake's
    expected key unless given) in $BFS_TEST_KEY. keys: more config keys of that section;
    flags: daemon flags (e.g. ["-s"])."""
    section = {"provider": "anthropic", "base_url": srv.url, "api_key_env": KEY_ENV,
               "poll_interval": "0.2", "list_interval": "0.5"}
    section.update({k: str(v) for k, v in keys.items()})
    key = srv.config["api_key"] if key is None else key
    return mount_factory({remote: section}, env={KEY_ENV: key}, extra_opts=extra_opts,
                         flags=flags)
