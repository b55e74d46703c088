#!/usr/bin/env python3
"""The base of the fake providers: an HTTP/1.1 server on 127.0.0.1 (standard library only).

A flavour (fake_anthropic.FakeAnthropic, ...) subclasses FakeServer, registers its routes with
route() and describes its error envelope in error_body(). The base gives every flavour the same
test surface, both as Python methods (tests run the server in-process) and over HTTP under
/_control/ (for the CLI):

  add_fault(rule)     inject a fault into matching requests (see Fault below)
  clear_faults()
  set_config(**kw)    change flavour settings (processing time, page size, ...)
  requests            the log of requests served: dicts with method, path, query, headers, status
                      (and mono, a monotonic time; retry_after of a rate limit's 429)
  rate_limit          config: requests per rate_limit_window seconds (default 60) per key; beyond
                      it, the flavour's 429 (rate_limited_response); rate_limited counts them,
                      budget_peak() is the most requests let through in any window
  count(method, re)   how many logged requests matched
  reset()             forget all state, faults and the log

Run one from a shell:  python3 tests/lib/fake_server.py anthropic [--port N] [--set key=value]
"""
import argparse
import gzip
import importlib
import json
import math
import os
import re
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAVOURS = {
    "anthropic": ("fake_anthropic", "FakeAnthropic"),
    "openai": ("fake_openai", "FakeOpenAI"),
    "azure": ("fake_openai", "FakeAzure"),
    "vertex": ("fake_vertex", "FakeVertex"),
}


class Response:
    """What a route handler returns. body: bytes, a dict/list (sent as JSON), or an iterable
    of bytes chunks (streamed with chunked transfer encoding)."""

    def __init__(self, status=200, body=b"", headers=None, content_type=None):
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.body = body
        if content_type:
            self.headers.setdefault("Content-Type", content_type)


class Request:
    """A parsed request given to route handlers. The body is read on first use of .body (or
    streamed with .read()), so a handler can refuse by Content-Length before reading."""

    def __init__(self, handler, match):
        self._h = handler
        self.method = handler.command
        u = urllib.parse.urlsplit(handler.path)
        self.path = u.path
        self.raw_query = u.query
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query,
                                                                 keep_blank_values=True).items()}
        self.headers = handler.headers
        self.match = match
        self._body = None
        self._left = int(handler.headers.get("Content-Length") or 0)
        self._chunked = "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower()

    @property
    def content_length(self):
        return self._left if not self._chunked else None

    def read(self, n=65536):
        """Next piece of the body, b"" at its end."""
        if self._chunked:
            return self._read_chunk()
        if self._left <= 0:
            return b""
        data = self._h.rfile.read(min(n, self._left))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._left -= len(data)
        return data

    def _read_chunk(self):
        # A body whose client left before its last chunk is incomplete, not short: like a
        # real server, refuse it (the route makes nothing; the base logs "client-gone").
        line = self._h.rfile.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("client closed the connection mid-body (chunked)")
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ConnectionError("bad chunk size line") from None
        if size == 0:
            while True:
                t = self._h.rfile.readline()
                if not t.endswith(b"\n"):
                    raise ConnectionError("client closed the connection in the trailer")
                if t in (b"\r\n", b"\n"):
                    break
            self._chunked = False
            self._left = 0
            return b""
        data = self._h.rfile.read(size)
        if len(data) < size or self._h.rfile.readline() not in (b"\r\n", b"\n"):
            raise ConnectionError("client closed the connection mid-chunk")
        return data

    def drain(self):
        while self.read():
            pass

    @property
    def body(self):
        if self._body is None:
            parts = []
            while True:
                p = self.read()
                if not p:
                    break
                parts.append(p)
            self._body = b"".join(parts)
        return self._body

    def json(self):
        return json.loads(self.body)


class Fault:
    """One injected fault. Fields of the rule dict:
      method, path      which requests (path is a regex searched in the path); default all
      action            "status": answer status/headers/body without touching state
                        "drop_before": close the connection before doing anything
                        "drop_after": do the request (state changes), then close unanswered
                        "truncate": do it, send headers and only `after` bytes of the body
                        "delay": sleep `seconds`, then do it normally
                        "hold": do it, then hold the answer for `seconds` (or until the
                        client goes away) and close unanswered: a client killed meanwhile
                        made a change it never heard of
                        "stall": read nothing of the body and answer nothing; hold the
                          connection open for `seconds` (a stalled upload)
                        "stall_body": do it, send headers and `after` bytes of the body
                          (default 0), then hold the rest back for `seconds`
                        "trickle": do it, then send the body `bytes` bytes (default 2)
                          every `interval` seconds (default 0.5)
                        a hold ends early when the client closes or the server stops; the
                        connection is then closed; `holding` counts the holds under way
                        "rewrite": do it, then send the body after `fn(bytes) -> bytes`
                          (in-process only) and/or with `append` (a list of str lines) added
                          at its end, one per line: bad or repeated result lines
                        "reset": do it, send headers and `after` bytes (default 0) of the
                          body, then reset the connection (RST, SO_LINGER 0)
                        "length": do it, but announce Content-Length `length` (an int, or
                          "+N"/"-N" relative to the body), send the body and close: a short
                          ("+") or long ("-": more bytes than announced) body
                        "gzip_bomb": do it, but answer 200 with Content-Encoding: gzip and
                          `size` bytes (default 4 GiB) of zeros, compressed on the fly
                        "redirect": answer `status` (default 302) with Location `location`
                          (the same path on another host if it ends with "/")
                        "early": read `after` bytes of the body (default 0), then answer
                          `status` and close, the rest unread (a server refusing a body
                          while it is sent)
      status, headers, body   for "status" (body defaults to the flavour's error envelope)
      after             bytes sent before a "truncate" cuts the stream (default half)
      seconds           for "delay" (default 1), "stall" and "stall_body" (default 3600)
      times             how many requests it applies to (default 1; 0 = forever)
      skip              matching requests let through untouched before it applies (0)
    """

    def __init__(self, rule):
        self.method = rule.get("method")
        self.path = re.compile(rule["path"]) if rule.get("path") else None
        self.action = rule.get("action", "status")
        if self.action not in ("status", "drop_before", "drop_after", "truncate", "delay",
                               "hold", "stall", "stall_body", "trickle", "rewrite", "reset",
                               "length", "gzip_bomb", "redirect", "early"):
            raise ValueError(f"unknown fault action {self.action!r}")
        self.status = int(rule.get("status", 302 if self.action == "redirect" else 500))
        self.fn = rule.get("fn")
        self.append = list(rule.get("append") or [])
        self.length = rule.get("length", "+100")
        self.size = int(rule.get("size", 4 << 30))
        self.location = rule.get("location", "")
        self.headers = rule.get("headers") or {}
        self.body = rule.get("body")
        self.after = rule.get("after")
        holds = self.action in ("stall", "stall_body")
        self.seconds = float(rule.get("seconds", 3600.0 if holds else 1.0))
        self.bytes = max(1, int(rule.get("bytes", 2)))
        self.interval = float(rule.get("interval", 0.5))
        self.times = int(rule.get("times", 1))
        self.skip = int(rule.get("skip", 0))
        self.hits = 0

    def matches(self, method, path):
        if self.method and self.method != method:
            return False
        return not self.path or self.path.search(path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-provider"

    def log_message(self, fmt, *args):  # quiet; the request log is in server.requests
        pass

    def _serve(self):
        srv = self.server.fake
        srv.dispatch(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class FakeServer:
    """Base class. Subclasses call self.route(method, regex, fn) in routes() and override
    error_body(), default_config() and reset_state()."""

    name = "fake"

    def __init__(self, port=0, **config):
        self.lock = threading.RLock()
        self._routes = []
        self.faults = []
        self.requests = []
        self.config = self.default_config()
        self.config.update(config)
        self._request_seq = 0
        self._stopping = threading.Event()
        self._budget = {}  # rate limit: key -> times of the requests let through (a window)
        self.rate_limited = 0  # requests refused with 429 by the rate limit
        self.holding = 0  # connections held open by a stall fault right now
        self.routes()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = None
        self.reset_state()

    # --- for subclasses -------------------------------------------------------------------
    def default_config(self):
        return {}

    def reset_state(self):
        pass

    def routes(self):
        pass

    def error_body(self, status, message, kind=None):
        return {"error": {"message": message, "type": kind or "error", "code": status}}

    def error(self, status, message, kind=None, headers=None):
        return Response(status, self.error_body(status, message, kind), headers)

    # --- rate limit (config "rate_limit": requests per "rate_limit_window" seconds, per key;
    # None: off). The services document a per-minute request budget per key (or project)
    # and answer 429 beyond it, with retry-after where they send one; a refused request does
    # not use the budget. Flavours shape the 429 (rate_limited_response).
    def rate_limit_key(self, h):
        """The credential a request is counted against."""
        return h.headers.get("x-api-key") or h.headers.get("api-key") or \
            h.headers.get("Authorization") or ""

    def rate_limit_applies(self, method, path):
        return True

    def rate_limited_response(self, retry_after, limit, window):
        """The 429 of the flavour's service; retry_after: seconds until the budget allows
        the next request."""
        return self.error(429, "rate limit exceeded", None,
                          {"retry-after": str(max(1, math.ceil(retry_after)))})

    def _rate_limit(self, h, method, path):
        """None, or the 429 for a request beyond its key's budget."""
        limit = self.config.get("rate_limit")
        if not limit or not self.rate_limit_applies(method, path):
            return None
        window = float(self.config.get("rate_limit_window") or 60.0)
        now = time.monotonic()
        key = self.rate_limit_key(h)
        with self.lock:
            times = [t for t in self._budget.get(key, []) if now - t < window]
            self._budget[key] = times
            if len(times) < int(limit):
                times.append(now)
                return None
            self.rate_limited += 1
            retry_after = times[0] + window - now
        return self.rate_limited_response(retry_after, int(limit), window)

    def budget_peak(self, window=None, since=0):
        """The most requests (429s not counted; all keys together) within any window, of the
        requests logged from index since."""
        window = float(window or self.config.get("rate_limit_window") or 60.0)
        with self.lock:
            times = sorted(r["mono"] for r in self.requests[since:]
                           if r.get("mono") is not None and r["status"] != 429)
        peak, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            peak = max(peak, hi - lo + 1)
        return peak

    def route(self, method, pattern, fn):
        self._routes.append((method, re.compile("^" + pattern + "$"), fn))

    def next_request_id(self, prefix="req_"):
        with self.lock:
            self._request_seq += 1
            return f"{prefix}{self._request_seq:012d}{os.urandom(4).hex()}"

    def now(self):
        return time.time()

    # --- control surface ------------------------------------------------------------------
    def add_fault(self, rule=None, **kw):
        f = Fault(dict(rule or {}, **kw))
        with self.lock:
            self.faults.append(f)
        return f

    def clear_faults(self):
        with self.lock:
            self.faults = []

    def set_config(self, **kw):
        with self.lock:
            self.config.update(kw)

    def count(self, method=None, path=None):
        rx = re.compile(path) if path else None
        with self.lock:
            return sum(1 for r in self.requests
                       if (not method or r["method"] == method) and
                       (not rx or rx.search(r["path"])))

    def reset(self):
        with self.lock:
            self.faults = []
            self.requests = []
            self._budget = {}
            self.config = self.default_config()
            self.reset_state()

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name=f"{self.name}-server")
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- dispatch -------------------------------------------------------------------------
    def _control(self, req):
        what = req.path[len("/_control/"):]
        if what == "faults" and req.method == "POST":
            self.add_fault(req.json())
            return Response(200, {"ok": True})
        if what == "faults" and req.method == "DELETE":
            self.clear_faults()
            return Response(200, {"ok": True})
        if what == "config" and req.method == "POST":
            self.set_config(**req.json())
            return Response(200, self.config)
        if what == "reset" and req.method == "POST":
            self.reset()
            return Response(200, {"ok": True})
        if what == "requests" and req.method == "GET":
            with self.lock:
                return Response(200, list(self.requests))
        return self.control(req, what) or Response(404, {"error": "no such control"})

    def control(self, req, what):
        """Flavour-specific control endpoints (e.g. create a batch as another client)."""
        return None

    def _take_fault(self, method, path):
        with self.lock:
            for f in self.faults:
                if f.matches(method, path):
                    if f.skip:
                        f.skip -= 1
                        return None
                    f.hits += 1
                    if f.times and f.hits >= f.times:
                        self.faults.remove(f)
                    return f
        return None

    def dispatch(self, h):
        path = urllib.parse.urlsplit(h.path).path
        if path.startswith("/_control/"):
            req = Request(h, None)
            self._send(h, self._control(req), req)
            return
        entry = {"method": h.command, "path": path, "query": urllib.parse.urlsplit(h.path).query,
                 "headers": dict(h.headers.items()), "status": None, "time": self.now(),
                 "mono": time.monotonic()}
        with self.lock:
            self.requests.append(entry)
        limited = self._rate_limit(h, h.command, path)
        if limited is not None:
            req = Request(h, None)
            req.drain()
            entry["status"] = limited.status
            entry["retry_after"] = limited.headers.get("retry-after")
            self._send(h, limited, req)
            return
        fault = self._take_fault(h.command, path)
        if fault and fault.action == "drop_before":
            entry["status"] = "dropped"
            self._drop(h)
            return
        if fault and fault.action == "delay":
            time.sleep(fault.seconds)
        if fault and fault.action == "stall":
            entry["status"] = "stalled"
            self._hold_open(h, fault.seconds)
            self._drop(h)
            return
        req = None
        for method, rx, fn in self._routes:
            m = rx.match(path)
            if m and method == h.command:
                req = Request(h, m)
                if fault and fault.action == "redirect":
                    req.drain()
                    loc = fault.location + (path.lstrip("/") if fault.location.endswith("/")
                                            else "")
                    resp = Response(fault.status, b"", dict(fault.headers, Location=loc))
                elif fault and fault.action == "early":
                    got, want = 0, int(fault.after or 0)
                    try:
                        while got < want:
                            piece = req.read(min(65536, want - got))
                            if not piece:
                                break
                            got += len(piece)
                    except ConnectionError:
                        pass
                    req._chunked, req._left = False, 0  # the rest stays unread
                    h.close_connection = True
                    body = fault.body if fault.body is not None else \
                        self.error_body(fault.status, "injected fault")
                    resp = Response(fault.status, body, dict(fault.headers, Connection="close"))
                elif fault and fault.action == "status":
                    req.drain()
                    body = fault.body if fault.body is not None else \
                        self.error_body(fault.status, "injected fault")
                    resp = Response(fault.status, body, fault.headers)
                else:
                    try:
                        resp = fn(req)
                    except ConnectionError:
                        entry["status"] = "client-gone"
                        h.close_connection = True
                        return
                break
        else:
            req = Request(h, None)
            req.drain()
            known = any(rx.match(path) for _, rx, _ in self._routes)
            resp = self.error(405 if known else 404,
                              "Method not allowed" if known else f"Not found: {path}",
                              "not_found_error" if not known else "invalid_request_error")
        entry["status"] = resp.status
        if fault and fault.action == "drop_after":
            entry["status"] = f"{resp.status}-dropped"
            self._drop(h)
            return
        if fault and fault.action == "hold":
            entry["status"] = f"{resp.status}-held"
            if req is not None and req.content_length:
                req.drain()  # the body was read by the route; nothing must wait in front
            self._hold_open(h, fault.seconds)
            self._drop(h)
            return
        if fault and fault.action in ("rewrite", "reset", "length", "gzip_bomb") and \
                200 <= resp.status < 300:
            self._send(h, resp, req, hostile=fault)
            return
        self._send(h, resp, req, truncate=fault if fault and fault.action in
                   ("truncate", "stall_body", "trickle") else None)

    def _hold_open(self, h, seconds):
        """Keeps the connection open, reading nothing, until the client closes its end,
        the server stops, or seconds pass."""
        with self.lock:
            self.holding += 1
        try:
            p = select.poll()
            p.register(h.connection, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self._stopping.is_set():
                if p.poll(50):
                    break  # gone (a body nobody reads may still sit in front of the end)
        finally:
            with self.lock:
                self.holding -= 1

    def _trickle(self, h, data, fault, chunked):
        for i in range(0, len(data), fault.bytes):
            if self._stopping.wait(fault.interval):
                break
            part = data[i:i + fault.bytes]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            h.wfile.flush()
        else:
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
            return
        self._drop(h)

    def _drop(self, h):
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, h, resp, req, truncate=None, hostile=None):
        try:
            if hostile:
                self._send_hostile(h, resp, req, hostile)
            else:
                self._send_answer(h, resp, req, truncate)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client went away (a killed daemon): not an error

    def _send_hostile(self, h, resp, req, fault):
        """The answer of a hostile server (see Fault: rewrite, reset, length, gzip_bomb)."""
        if req is not None and req.content_length:
            req.drain()
        body = resp.body if isinstance(resp.body, bytes) else b"".join(resp.body)
        headers = {k: v for k, v in resp.headers.items() if k.lower() != "request-id"}
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)  # rewritten as plain bytes
            headers.pop("Content-Encoding")
        if fault.action == "rewrite":
            if fault.fn:
                body = fault.fn(body)
            if fault.append:
                body = body.rstrip(b"\n") + b"".join(b"\n" + x.encode() for x in fault.append)
        h.send_response(resp.status)
        h.send_header("request-id", self.next_request_id())
        for k, v in headers.items():
            h.send_header(k, str(v))
        if fault.action == "gzip_bomb":
            h.send_header("Content-Encoding", "gzip")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
            block, left = bytes(1 << 20), fault.size
            while left > 0 and not self._stopping.is_set():
                out = z.compress(block[:min(left, len(block))])
                left -= min(left, len(block))
                if out:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(out), out))
            out = z.flush()
            h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(out), out))
            return
        if fault.action == "length":
            n = fault.length
            n = len(body) + int(n) if isinstance(n, str) else int(n)
            h.send_header("Content-Length", str(max(0, n)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
            self._drop(h)
            return
        if fault.action == "reset":
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[:fault.after or 0])
            h.wfile.flush()
            h.close_connection = True
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            h.connection.close()
            return
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _send_answer(self, h, resp, req, truncate):
        if req is not None and req.content_length:
            req.drain()  # an unread body would be taken for the next request
        h.send_response(resp.status)
        rid = resp.headers.pop("request-id", None) or self.next_request_id()
        h.send_header("request-id", rid)
        for k, v in resp.headers.items():
            h.send_header(k, str(v))
        body = resp.body
        if truncate and truncate.action == "trickle":
            data = body if isinstance(body, bytes) else b"".join(body)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.flush()
            self._trickle(h, data, truncate, False)
            return
        if isinstance(body, bytes):
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if truncate and truncate.action == "stall_body":
                cut = truncate.after or 0
                h.wfile.write(body[:cut])
                h.wfile.flush()
                self._hold_open(h, truncate.seconds)
                self._drop(h)
                return
            if truncate:
                cut = truncate.after if truncate.after is not None else len(body) // 2
                h.wfile.write(body[:cut])
                h.wfile.flush()
                self._drop(h)
                return
            if h.command != "HEAD":
                h.wfile.write(body)
            return
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        try:
            for chunk in body:
                if not chunk:
                    continue
                if truncate:
                    cut = truncate.after if truncate.after is not None else \
                        (0 if truncate.action == "stall_body" else 1024)
                    if sent + len(chunk) > cut:
                        part = chunk[:cut - sent]
                        if part:
                            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        h.wfile.flush()
                        if truncate.action == "stall_body":
                            self._hold_open(h, truncate.seconds)
                        self._drop(h)
                        return
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True


def load_flavour(name):
    mod, cls = FLAVOURS[name]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    return getattr(importlib.import_module(mod), cls)


def main():
    ap = argparse.ArgumentParser(description="Run a fake provider on 127.0.0.1.")
    ap.add_argument("flavour", choices=sorted(FLAVOURS))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value (JSON or string)")
    a = ap.parse_args()
    config = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            config[k] = json.loads(v)
        except ValueError:
            config[k] = v
    srv = load_flavour(a.flavour)(port=a.port, **config)
    print(srv.url, flush=True)
    try:
        srv.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
