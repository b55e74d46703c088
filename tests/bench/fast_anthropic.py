#!/usr/bin/env python3
"""An Anthropic-shaped Message Batches server for benchmarks (not a fake: it checks nothing).

It answers the calls batchfs makes with the shapes of the real API (docs.anthropic.com,
"Message Batches"), but at the speed of the machine, so that a benchmark measures batchfs and
not the test fake (tests/lib/fake_anthropic.py parses every request in Python):

  POST /v1/messages/batches         reads the body in 4 MiB chunks (Content-Length or chunked),
                                    counts its requests (occurrences of "custom_id") and answers
                                    a batch that has already ended
  GET  /v1/messages/batches/ID      that batch
  GET  /v1/messages/batches         the list, newest first, in pages
  GET  /v1/messages/batches/ID/results
                                    lines [first, first + n) of RESULTS with sendfile, where
                                    first is the number of requests of the batches created
                                    before it: the benchmark writes RESULTS with the lines in
                                    the order of its requests, and batchfs creates the parts of
                                    one file in file order
  POST /sink                        reads the body and counts its requests as a create does, then
                                    discards it (the curl baseline's upload)
  GET  /file                        RESULTS whole (the curl baseline's download)

Usage: fast_anthropic.py RESULTS   (prints its base url on stdout, then serves until killed)
"""
import bisect
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/v1/messages/batches"
CHUNK = 4 << 20


class State:
    def __init__(self, results):
        self.results = results
        self.lock = threading.Lock()
        self.batches = []  # dicts, in creation order
        self.offsets = self._index(results)
        self.cursor = 0

    @staticmethod
    def _index(path):
        """Byte offset of every line start of path, and its size at the end."""
        offs = [0]
        with open(path, "rb") as f:
            pos = 0
            while True:
                block = f.read(CHUNK)
                if not block:
                    break
                i = block.find(b"\n")
                while i >= 0:
                    offs.append(pos + i + 1)
                    i = block.find(b"\n", i + 1)
                pos += len(block)
        if offs[-1] != pos:
            offs.append(pos)
        return offs

    def create(self, n):
        with self.lock:
            # Past the end (a benchmark that sends the same file again), start over.
            total = len(self.offsets) - 1
            if self.cursor + n > total:
                self.cursor = 0
            first = self.cursor
            self.cursor += n
            last = min(self.cursor, total)
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            b = {"id": "msgbatch_%024d" % (len(self.batches) + 1), "n": n,
                 "range": (self.offsets[min(first, last)], self.offsets[last]),
                 "created_at": now}
            self.batches.append(b)
            return b

    def find(self, bid):
        with self.lock:
            for b in self.batches:
                if b["id"] == bid:
                    return b
        return None


def view(b, base):
    return {
        "id": b["id"], "type": "message_batch", "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": b["n"], "errored": 0,
                           "canceled": 0, "expired": 0},
        "ended_at": b["created_at"], "created_at": b["created_at"],
        "expires_at": b["created_at"], "archived_at": None, "cancel_initiated_at": None,
        "results_url": f"{base}{API}/{b['id']}/results",
    }


def make_handler(state):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def base(self):
            return "http://" + self.headers.get("Host", "127.0.0.1")

        def body_chunks(self):
            """The request body, in chunks, whatever its framing."""
            n = self.headers.get("Content-Length")
            if n is not None:
                left = int(n)
                while left > 0:
                    data = self.rfile.read(min(CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                    yield data
                return
            if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                return
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left > 0:
                    data = self.rfile.read(min(CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                    yield data
                self.rfile.readline()

        def count_requests(self):
            """(bytes, occurrences of "custom_id") of the body."""
            # A key can straddle two chunks: the 20 bytes around a seam hold only
            # occurrences that cross it (the key is 11 bytes long).
            key, got, n, tail = b'"custom_id"', 0, 0, b""
            for c in self.body_chunks():
                got += len(c)
                n += (tail + c[:10]).count(key) + c.count(key)
                tail = c[-10:]
            return got, n

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("request-id", "req_bench")
            self.end_headers()
            self.wfile.write(body)

        def send_range(self, start, end):
            self.send_response(200)
            self.send_header("Content-Type", "application/binary")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self.wfile.flush()
            with open(state.results, "rb") as f:
                off = start
                while off < end:
                    k = os.sendfile(self.connection.fileno(), f.fileno(), off, end - off)
                    if k <= 0:
                        break
                    off += k

        def do_POST(self):
            path = self.path.split("?")[0]
            if path == "/sink":
                # The same work per byte as a create (the baseline must not be a cheaper
                # server: counting costs this Python thread about as much as reading).
                got, n = self.count_requests()
                return self.reply(200, {"received": got, "requests": n})
            if path == API:
                return self.reply(200, view(state.create(self.count_requests()[1]),
                                            self.base()))
            m = re.fullmatch(API + r"/([^/]+)/cancel", path)
            if m and state.find(m.group(1)):
                return self.reply(200, view(state.find(m.group(1)), self.base()))
            self.reply(404, {"type": "error", "error": {"type": "not_found_error",
                                                         "message": "not found"}})

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path == "/file":
                return self.send_range(0, os.path.getsize(state.results))
            if path == API:
                with state.lock:
                    rows = list(reversed(state.batches))
                after = re.search(r"after_id=([^&]+)", query)
                if after:
                    ids = [b["id"] for b in rows]
                    rows = rows[ids.index(after.group(1)) + 1:] if after.group(1) in ids else []
                page = rows[:100]
                return self.reply(200, {
                    "data": [view(b, self.base()) for b in page],
                    "has_more": len(rows) > len(page),
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None})
            m = re.fullmatch(API + r"/([^/]+)(/results)?", path)
            b = state.find(m.group(1)) if m else None
            if not b:
                return self.reply(404, {"type": "error", "error": {
                    "type": "not_found_error", "message": "not found"}})
            if m.group(2):
                return self.send_range(*b["range"])
            self.reply(200, view(b, self.base()))

    return H


def main():
    state = State(sys.argv[1])
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    srv.daemon_threads = True
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
