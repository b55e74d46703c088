#!/usr/bin/env python3
"""batchfs benchmark of parts (not a test: it prints figures).

One `cp` of a requests.jsonl of N requests (default 1,000,000, about 2.5 GB) into a batch dir of
a remote with `max_requests = 100000` (so 10 parts at 1M), then, in ONE run, each figure with
its baseline measured in the same run on the same fresh loop-mounted ext4 image (the root file
system here is unjournaled ext4 whose speed collapses after big deletes):

  1. submit: time until `cp` returns (validated, split, every part created)
     vs `cp` to the loop disk + the "upload": for `anthropic` a plain
     `curl -X POST -T file` (streamed: `--data-binary @file` refuses files over 1 GB) to a
     local HTTP sink that reads and discards the body; for
     `mock` (which copies each part on local disk) a second `cp` of the file to disk
  2. results ready: from cp's return until `status` says results "ready" (every part ended,
     every result ingested) vs `curl` of the same result bytes from a local server (sendfile)
     into one local file
  3. the daemon's peak RSS (VmHWM) over the whole run, PASS/FAIL against 64 MB
  4. `cat status` (open+read+close of the idle, completed batch's status) 1,000 times, median
     and p99 (target < 1 ms), idle (best of 3 rounds) and then while 8 commits are stalled at
     the fake Anthropic server (a delay fault on every create); how many creates were in
     flight at the fake, and what the daemon's threads were blocked in, are reported. Read the
     max and the first read with the p99: a read that waits for a free FUSE thread is one
     sample in 1,000
  anthropic only: the fake server's own speed alone (one part's create, poll and results
  download timed straight against it, times the number of parts) as a floor for 1 and 2.
Also printed: where the submit's time went (writes / validation + split / creates, from the
spool's size and the daemon's log), when each part ended and became ready, the cache's files
and the WAL's size at ready, the peak disk use, CPU seconds of the daemon and the fake per
phase, the daemon's VmHWM after each phase, and a SUMMARY block at the end.

At 1M: mock about 4 minutes, anthropic about 7 (the Python fake is the bottleneck there: see
its floor line); peak disk use about 19 GB of the 32 GB sparse image; the fake needs about
6 GB of RAM. The load average is printed: other work on the machine skews every figure.

The fake Anthropic server (tests/lib/fake_server.py) runs as a subprocess in both modes (in
`mock` mode only for figure 4, as a second remote). Its listing is made rare
(list_interval = 3600): the fake computes every result of every listed batch per listing.

Usage (root, for the loop mount):
  BATCHFS_BIN=build/src/batchfs python3 tests/bench/bench_parts.py [N] \\
      [--provider mock|anthropic] [--per-part 100000] [--stall-s 30] [--stalls 8] \\
      [--reads 1000] [--image-gb G] [--log FILE] [--perf]
--log FILE keeps the daemon's stderr, each line prefixed with seconds since the daemon started;
--perf records the daemon with `perf record` during the submit and results phases and prints
its top symbols.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, "..", "lib")
sys.path.insert(0, LIB)
from mount import is_mounted, wait_for  # noqa: E402

API = "/v1/messages/batches"
KEY_ENV = "BFS_TEST_KEY"
FAKE_KEY = "sk-ant-api03-fake-test-key"
RSS_LIMIT_MB = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the local HTTP sink and source (the baselines' "server") ---------------------------------

def serve(root):
    """POST/PUT: read the body, discard it. GET /NAME: send ROOT/NAME with sendfile."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            buf = memoryview(bytearray(4 << 20))
            got = 0
            while got < n:
                k = self.rfile.readinto(buf[:min(len(buf), n - got)])
                if not k:
                    break
                got += k
            body = b'{"received": %d}\n' % got
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST

        def do_GET(self):
            path = os.path.join(root, os.path.basename(self.path))
            try:
                f = open(path, "rb")
            except OSError:
                self.send_error(404)
                return
            with f:
                size = os.fstat(f.fileno()).st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/x-jsonl")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.flush()
                off = 0
                while off < size:
                    k = os.sendfile(self.connection.fileno(), f.fileno(), off, size - off)
                    if k <= 0:
                        break
                    off += k

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


# --- helpers -----------------------------------------------------------------------------------

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def timed(cmd):
    t = time.perf_counter()
    sh(cmd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def gb(nbytes):
    return nbytes / 1e9


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    """utime + stime of a process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


def make_requests(path, n, model):
    """n Anthropic-format lines of about 2,480 bytes (2.48 GB at 1M; 100,000 lines = 248 MB,
    under the 256 MB per batch of both providers, so parts split by count)."""
    pad = "lorem ipsum dolor sit amet " * 88
    head = '{"custom_id":"req-%07d","params":{"model":"' + model + \
        '","max_tokens":64,"messages":[{"role":"user","content":"%d ' + pad + '"}]}}\n'
    with open(path, "w") as f:
        step = 10000
        for base in range(0, n, step):
            f.write("".join(head % (i, i) for i in range(base, min(n, base + step))))


def percentile(sorted_vals, q):
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * q))]


def read_status(batch):
    with open(os.path.join(batch, "status"), "rb") as f:
        return json.loads(f.read())


def status_latencies(path, count):
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        with open(path, "rb") as f:
            f.read()
        lat.append((time.perf_counter() - t) * 1e6)
    return lat


SYSCALLS = {0: "read", 1: "write", 7: "poll", 23: "select", 35: "nanosleep", 44: "sendto",
            45: "recvfrom", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait",
            270: "pselect6", 271: "ppoll", 281: "epoll_pwait"}


def thread_syscalls(pid):
    """What each thread of pid is blocked in: {"futex": 7, "read": 1, ...}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                word = f.read().split()[0]
        except (OSError, IndexError):
            continue
        name = "running" if word == "running" else SYSCALLS.get(int(word), f"syscall {word}")
        out[name] = out.get(name, 0) + 1
    return ", ".join(f"{v} in {k}" for k, v in sorted(out.items(), key=lambda x: -x[1]))


def log_times(path, pattern):
    """The timestamps of the daemon's log lines that contain pattern."""
    with open(path) as f:
        return [float(x.split()[0]) for x in f if pattern in x]


def spool_bytes(cache):
    total = 0
    for root, dirs, files in os.walk(os.path.join(cache, "spool")):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def describe_lat(lat):
    s = sorted(lat)
    over = sum(1 for x in lat if x >= 1000)
    return (f"median {statistics.median(s):.0f} us, p99 {percentile(s, 0.99):.0f} us, "
            f"max {s[-1] / 1000:.1f} ms, first {lat[0] / 1000:.1f} ms, "
            f"{over} of {len(lat)} >= 1 ms"), percentile(s, 0.99)


class Monitor(threading.Thread):
    """Samples the daemon's RSS and the loop disk's use every 0.2 s."""

    def __init__(self, pid, disk, cache):
        super().__init__(daemon=True)
        self.pid, self.disk, self.cache = pid, disk, cache
        self.peak_disk = 0
        self.peak_rss_kb = 0
        self.peak_wal = 0
        self.stop = threading.Event()

    def wal(self):
        try:
            return max([os.path.getsize(os.path.join(self.cache, f))
                        for f in os.listdir(self.cache) if f.endswith("-wal")] or [0])
        except OSError:
            return 0

    def used(self):
        st = os.statvfs(self.disk)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def run(self):
        while not self.stop.wait(0.2):
            self.peak_disk = max(self.peak_disk, self.used())
            self.peak_rss_kb = max(self.peak_rss_kb, proc_status_kb(self.pid, "VmRSS"))
            self.peak_wal = max(self.peak_wal, self.wal())


def du(path):
    """Bytes allocated under path (files and directories)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def cache_breakdown(cache):
    out = []
    for e in sorted(os.listdir(cache)):
        p = os.path.join(cache, e)
        size = du(p) if os.path.isdir(p) else os.lstat(p).st_blocks * 512
        if size >= 1e6:
            out.append(f"{e}{'/' if os.path.isdir(p) else ''} {size / 1e9:.2f} GB")
    return ", ".join(out)


class Daemon:
    """batchfs -f, its stderr timestamped (seconds since start) into a log file."""

    def __init__(self, binary, cfg, cache, mnt, log_path, env):
        self.mnt = mnt
        self.t0 = time.monotonic()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "-f", "-o", f"config={cfg},cache={cache},auto_unmount", mnt],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def now(self):
        return time.monotonic() - self.t0

    def mark(self, text):
        self.log.write(f"{self.now():9.3f} --- bench: {text}\n")
        self.log.flush()

    def _read(self):
        for line in self.proc.stderr:
            self.log.write(f"{self.now():9.3f} {line.decode(errors='replace')}")
            self.log.flush()

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
        self.reader.join(5)
        self.log.close()


def start_server(cmd):
    """A server subprocess that prints its URL as its first line."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip()
    if not url.startswith("http://"):
        p.kill()
        raise RuntimeError(f"server {cmd} did not start")
    return p, url


def stop_proc(p):
    if p and p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class Fake:
    """The fake Anthropic server as a subprocess, driven over /_control/."""

    def __init__(self, **config):
        cmd = [sys.executable, os.path.join(LIB, "fake_server.py"), "anthropic"]
        for k, v in config.items():
            cmd += ["--set", f"{k}={json.dumps(v)}"]
        self.proc, self.url = start_server(cmd)

    def control(self, method, what, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_control/" + what, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def creates_in_flight(self):
        return sum(1 for r in self.control("GET", "requests")
                   if r["method"] == "POST" and r["path"] == API and r["status"] is None)

    def curl(self, method, path, out="/dev/null", data=None):
        cmd = (f"curl -sS -f -X {method} -H 'x-api-key: {FAKE_KEY}' "
               f"-H 'anthropic-version: 2023-06-01' -H 'Expect:' -o {out} ")
        if data:
            cmd += f"-H 'Content-Type: application/json' --data-binary @{data} "
        return cmd + f"'{self.url}{path}'"

    def stop(self):
        stop_proc(self.proc)


class Perf:
    def __init__(self, enabled, pid, outdir):
        self.enabled = enabled and shutil.which("perf")
        self.pid, self.outdir, self.proc, self.file = pid, outdir, None, None

    def start(self, phase):
        if not self.enabled:
            return
        self.file = os.path.join(self.outdir, f"perf-{phase}.data")
        self.proc = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(self.pid),
                                      "-o", self.file], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self, phase):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        self.proc = None
        out = subprocess.run(["perf", "report", "-i", self.file, "--stdio", "--no-children",
                              "--sort", "comm,dso,symbol", "--percent-limit", "1.5"],
                             capture_output=True, text=True).stdout
        rows = [x for x in out.splitlines() if x.strip() and not x.startswith("#")]
        print(f"  perf, daemon during {phase} (comm dso symbol, >= 1.5% of samples):")
        for x in rows[:15]:
            print("    " + x.strip())


# --- the benchmark -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1000000)
    ap.add_argument("--provider", choices=("mock", "anthropic"), default="mock")
    ap.add_argument("--per-part", type=int, default=100000, help="max_requests of the remote")
    ap.add_argument("--stall-s", type=float, default=30, help="delay of each stalled create")
    ap.add_argument("--stalls", type=int, default=8, help="commits stalled at the fake")
    ap.add_argument("--reads", type=int, default=1000, help="status reads per measurement")
    ap.add_argument("--image-gb", type=float, default=0, help="loop image size (sparse)")
    ap.add_argument("--log", help="keep the daemon's timestamped stderr in this file")
    ap.add_argument("--perf", action="store_true", help="perf record the daemon per phase")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it loop-mounts a fresh ext4 image)")
    binary = os.path.abspath(os.environ.get("BATCHFS_BIN", os.path.join(
        HERE, "..", "..", "build", "src", "batchfs")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    n, anth = a.n, a.provider == "anthropic"
    parts = -(-n // a.per_part)
    work = tempfile.mkdtemp(prefix="bfsbench-parts-")
    # Sparse image: input, its baseline copies, the spool, the mock's copies, the cache with
    # every result, the results baseline's two files (about 12 KB a request at most at once).
    free = shutil.disk_usage(work).free
    size = int(a.image_gb * 1e9) if a.image_gb else max(4 << 30, n * 32000)
    if n * 16000 > free:
        sys.exit(f"bench: {n} requests need about {gb(n * 16000):.0f} GB, "
                 f"{gb(free):.0f} GB free")
    size = min(size, int(free * 0.9))
    img, disk = os.path.join(work, "disk.img"), os.path.join(work, "disk")
    os.mkdir(disk)
    print(f"bench_parts: N={n}, provider={a.provider}, max_requests={a.per_part} "
          f"({parts} parts), loop image {gb(size):.0f} GB (sparse) in {work}; load average "
          f"{os.getloadavg()[0]:.2f} (other work on this machine skews every figure)",
          flush=True)

    summary = []
    stack = contextlib.ExitStack()
    try:
        sh(f"truncate -s {size} {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {disk}")
        stack.callback(lambda: subprocess.run(f"umount {disk} || umount -l {disk}", shell=True))
        for d in ("mnt", "cache", "local", "gen", "www"):
            os.mkdir(os.path.join(disk, d))
        mnt = os.path.join(disk, "mnt")

        fake = Fake(processing_s=1, max_body_bytes=300 * 1000 * 1000, results_chunk=1 << 20,
                    api_key=FAKE_KEY)
        stack.callback(fake.stop)
        sink_proc, sink = start_server([sys.executable, os.path.abspath(__file__), "--serve",
                                        os.path.join(disk, "www")])
        stack.callback(stop_proc, sink_proc)

        cfg = os.path.join(disk, "config")
        anth_keys = (f"provider = anthropic\nbase_url = {fake.url}\napi_key_env = {KEY_ENV}\n"
                     "poll_interval = 0.5\nlist_interval = 3600\n")
        with open(cfg, "w") as f:
            if anth:
                f.write(f"[bench]\n{anth_keys}max_requests = {a.per_part}\n")
            else:
                f.write(f"[bench]\nprovider = mock\nmock_delay = 1\npoll_interval = 0.2\n"
                        f"max_requests = {a.per_part}\n\n[stall]\n{anth_keys}")
        stall_remote = "bench" if anth else "stall"

        reqs = os.path.join(disk, "gen", "requests.jsonl")
        t = time.perf_counter()
        make_requests(reqs, n, "claude-haiku-4-5")
        req_bytes = os.path.getsize(reqs)
        print(f"requests: {n} lines, {req_bytes / 1e6:.0f} MB "
              f"(generated in {time.perf_counter() - t:.0f} s)", flush=True)

        log_path = a.log or os.path.join(work, "daemon.log")
        env = dict(os.environ, **{KEY_ENV: FAKE_KEY})
        daemon = Daemon(binary, cfg, os.path.join(disk, "cache"), mnt, log_path, env)
        stack.callback(daemon.stop)

        def up():
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"batchfs exited with {daemon.proc.returncode}; "
                                   f"log {log_path}")
            return is_mounted(mnt)
        wait_for(up, 20, what="mount")
        mon = Monitor(daemon.pid, disk, os.path.join(disk, "cache"))
        mon.start()
        stack.callback(mon.stop.set)
        perf = Perf(a.perf, daemon.pid, work)
        stack.callback(lambda: perf.proc and perf.stop("(aborted)"))
        batch = os.path.join(mnt, "bench", "big")
        os.mkdir(batch)

        # --- 1. submit ------------------------------------------------------------------------
        sh("sync")
        t_cp = timed(f"cp {reqs} {disk}/local/copy1.jsonl")
        if anth:
            t = time.perf_counter()
            # Not --data-binary @file: curl reads that into memory and refuses files over 1 GB;
            # -T streams the file as the body (Content-Length, no chunking).
            out = subprocess.run(f"curl -sS -f -X POST -H 'Expect:' -H 'Content-Type: "
                                 f"application/json' -T {reqs} {sink}/upload", shell=True,
                                 check=True, capture_output=True, text=True).stdout
            t_up = time.perf_counter() - t
            assert json.loads(out)["received"] == req_bytes, out
            up_what = "curl -T file (a streamed POST) to a local HTTP sink"
        else:
            t_up = timed(f"cp {reqs} {disk}/local/copy2.jsonl")
            up_what = ("a second cp to disk (the mock's upload is local: it copies each part "
                       "on disk)")
        sh(f"rm -f {disk}/local/copy1.jsonl {disk}/local/copy2.jsonl && sync")
        base_submit = t_cp + t_up

        cpu0 = (cpu_s(daemon.pid), cpu_s(fake.proc.pid))
        daemon.mark("submit: cp starts")
        perf.start("submit")
        writes_done = {}
        cp_running = threading.Event()
        cp_running.set()

        def watch_spool():  # when every byte has gone through write(): the rest is close()
            while cp_running.is_set():
                if spool_bytes(os.path.join(disk, "cache")) >= req_bytes:
                    writes_done["t"] = daemon.now()
                    daemon.mark("submit: every byte written (close() from here)")
                    return
                time.sleep(0.02)
        watcher = threading.Thread(target=watch_spool, daemon=True)
        watcher.start()
        t_cp0 = daemon.now()
        t = time.perf_counter()
        sh(f"cp {reqs} {batch}/requests.jsonl")
        t_submit = time.perf_counter() - t
        cp_running.clear()
        watcher.join()
        t_returned = time.monotonic()
        daemon.mark("submit: cp returned")
        perf.stop("submit")
        cpu1 = (cpu_s(daemon.pid), cpu_s(fake.proc.pid))
        rss_submit = proc_status_kb(daemon.pid, "VmHWM")
        body = os.path.join(disk, "gen", "part1.json")
        if anth:  # for the fake's floor at the end: the first part's create body
            with open(reqs, "rb") as fin, open(body, "wb") as fout:
                fout.write(b'{"requests":[')
                for i in range(min(n, a.per_part)):
                    ln = fin.readline().rstrip(b"\n")
                    fout.write(ln if i == 0 else b"," + ln)
                fout.write(b"]}")
        os.unlink(reqs)  # the spool has it now: room for the results
        st = read_status(batch)
        nparts = len(st.get("parts") or [None])
        line = (f"1. submit, N={n} ({req_bytes / 1e6:.0f} MB, {nparts} parts): cp into the batch "
                f"{t_submit:.2f} s; baseline {base_submit:.2f} s (cp to disk {t_cp:.2f} s + "
                f"{up_what} {t_up:.2f} s); ratio {t_submit / base_submit:.2f}x")
        print(line)
        summary.append(line)
        t_split = [x for x in log_times(log_path, "requests in ") if x >= t_cp0]
        t_sent = [x for x in log_times(log_path, "' submitted") if x >= t_cp0]
        if "t" in writes_done and t_split and t_sent:
            print(f"   submit breakdown (spool size and daemon log times): writes "
                  f"{writes_done['t'] - t_cp0:.1f} s, close(): validation + split "
                  f"{t_split[0] - writes_done['t']:.1f} s, {nparts} creates "
                  f"{t_sent[0] - t_split[0]:.1f} s")
        print(f"   cpu during submit: daemon {cpu1[0] - cpu0[0]:.1f} s"
              + (f", fake {cpu1[1] - cpu0[1]:.1f} s" if anth else "")
              + f" (wall {t_submit:.1f} s); state {st['state']}, "
              f"parts {[p['counts']['total'] for p in st.get('parts', [])]}", flush=True)

        # --- 2. results ready -----------------------------------------------------------------
        perf.start("results")
        perf_last = []
        timeline = {}
        last = None
        deadline = time.monotonic() + max(900, n / 200)
        while True:
            st = read_status(batch)
            now = time.monotonic() - t_returned
            for p in st.get("parts") or []:
                k = p["part"]
                if p["state"] not in ("submitting", "validating", "in_progress", "finalizing",
                                      "canceling"):
                    timeline.setdefault((k, "ended"), now)
                if p["results"] == "ready":
                    timeline.setdefault((k, "ready"), now)
            ps = st.get("parts") or []
            if len(ps) > 1 and not perf_last and all(p["results"] == "ready" for p in ps[:-1]):
                perf_last.append(now)
                daemon.mark("every part but the last ready")
                perf.stop("results (every part but the last)")
                perf.start("the last part (download, ingest, merge of every part)")
            if st["results"] == "ready":
                break
            if st["results"] == "unavailable" or st["state"] == "failed":
                raise RuntimeError(f"batch ended without results: {json.dumps(st)[:2000]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"results not ready in time: {json.dumps(st)[:2000]}")
            if (st["state"], st["results"]) != last:
                last = (st["state"], st["results"])
                daemon.mark(f"status: {last}")
            time.sleep(0.1)
        t_ready = time.monotonic() - t_returned
        daemon.mark("results ready")
        disk_ready, wal_ready = mon.used(), mon.wal()
        perf.stop("the last part (download, ingest, merge of every part)" if perf_last
                  else "results")
        cpu2 = (cpu_s(daemon.pid), cpu_s(fake.proc.pid))
        rss_results = proc_status_kb(daemon.pid, "VmHWM")
        if st.get("parts"):
            print("   parts (seconds after cp returned; negative: before): " + ", ".join(
                f"{p['part']}: ended {timeline.get((p['part'], 'ended'), -1):.1f} "
                f"ready {timeline.get((p['part'], 'ready'), -1):.1f}" for p in st["parts"]))
        print(f"   state {st['state']}, counts {st['counts']}; cpu from cp's return to ready: "
              f"daemon {cpu2[0] - cpu1[0]:.1f} s"
              + (f", fake {cpu2[1] - cpu1[1]:.1f} s" if anth else "")
              + f" (wall {t_ready:.1f} s)", flush=True)
        t_ready_d = daemon.now()
        last_pid = (st.get("parts") or [{}])[-1].get("id") or st["id"]
        if perf_last:
            print(f"   the last part: its results were ready {t_ready - perf_last[0]:.1f} s after "
                  f"all the others'")
        print(f"   at ready: loop disk {gb(disk_ready):.1f} GB used, WAL {gb(wal_ready):.2f} GB "
              f"(peak so far {gb(mon.peak_wal):.2f} GB); cache: "
              f"{cache_breakdown(os.path.join(disk, 'cache'))}", flush=True)

        src = os.path.join(disk, "www", "results.jsonl")
        t_cat = timed(f"cat {batch}/results.jsonl > {src}")
        res_bytes = os.path.getsize(src)
        sh("sync")
        dl = os.path.join(disk, "local", "results.jsonl")
        t_dl = timed(f"curl -sS -f -o {dl} {sink}/results.jsonl")
        assert os.path.getsize(dl) == res_bytes
        t_sync = timed(f"sync {dl}")
        line = (f"2. results ready, N={n} ({res_bytes / 1e6:.0f} MB of results): "
                f"{t_ready:.2f} s after cp returned; baseline curl from a local server into "
                f"one file {t_dl:.2f} s (+ fsync {t_sync:.2f} s); ratio {t_ready / t_dl:.2f}x "
                f"({t_ready / (t_dl + t_sync):.2f}x with the fsync)")
        print(line)
        summary.append(line)
        print(f"   cat results.jsonl > disk: {t_cat:.2f} s "
              f"({res_bytes / 1e6 / t_cat:.0f} MB/s)", flush=True)
        os.unlink(src)
        os.unlink(dl)
        rss_cat = proc_status_kb(daemon.pid, "VmHWM")

        # --- 4. status latency, idle, then with commits stalled at the fake -------------------
        status = os.path.join(batch, "status")
        status_latencies(status, 100)  # warm
        rounds = [describe_lat(status_latencies(status, a.reads)) for _ in range(3)]
        idle, idle_p99 = min(rounds, key=lambda r: r[1])
        line = (f"4a. cat status ({nparts} parts, {os.path.getsize(status)} bytes, idle mount), "
                f"{a.reads} reads, best of 3 rounds: {idle} (p99 of each round: "
                f"{', '.join(f'{r[1]:.0f}' for r in rounds)} us)")
        print(line, flush=True)
        summary.append(line)
        rss_idle = proc_status_kb(daemon.pid, "VmHWM")

        small = os.path.join(disk, "gen", "small.jsonl")
        make_requests(small, 3, "claude-haiku-4-5")
        dirs = []
        for i in range(a.stalls):
            d = os.path.join(mnt, stall_remote, f"stall-{i}")
            os.mkdir(d)
            dirs.append(d)
        fake.control("POST", "faults", {"method": "POST", "path": f"^{API}$", "action": "delay",
                                        "seconds": a.stall_s, "times": 0})
        daemon.mark(f"stall: {a.stalls} cp start")
        t_stall = time.monotonic()
        cps = [subprocess.Popen(["cp", small, os.path.join(d, "requests.jsonl")],
                                stderr=subprocess.PIPE) for d in dirs]

        def kill_cps():
            for p in cps:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
        stack.callback(kill_cps)
        # Until the fake holds all of them, or their number stops growing for 3 s.
        seen, since = 0, time.monotonic()
        while time.monotonic() - t_stall < min(a.stall_s * 0.6, 20):
            k = fake.creates_in_flight()
            if k != seen:
                seen, since = k, time.monotonic()
            if k >= a.stalls or (k and time.monotonic() - since > 3):
                break
            time.sleep(0.1)
        in_flight = fake.creates_in_flight()
        waiting = sum(1 for p in cps if p.poll() is None)
        threads = thread_syscalls(daemon.pid)
        daemon.mark(f"stall: {in_flight} creates at the fake, {waiting} cp blocked")
        t = time.monotonic()
        lat = status_latencies(status, a.reads)
        t_reads = time.monotonic() - t
        in_flight_after = fake.creates_in_flight()
        stalled, stalled_p99 = describe_lat(lat)
        line = (f"4b. cat status while {a.stalls} commits are stalled ({a.stall_s:.0f} s delay "
                f"on each create; {in_flight} create(s) in flight at the fake, {waiting} cp "
                f"blocked in close(); commits run on FUSE threads, max 8, until the per-remote "
                f"commit worker lands), {a.reads} reads in {t_reads:.1f} s: {stalled}")
        print(line, flush=True)
        summary.append(line)
        print(f"   daemon threads before the reads (/proc/PID/task/*/syscall): {threads}")
        daemon.mark("stall: reads done")
        fake.control("DELETE", "faults")
        t_cleared = time.monotonic() - t_stall
        ends = []
        for p in cps:
            try:
                p.wait(a.stall_s + 60)
            except subprocess.TimeoutExpired:
                pass
            ends.append(time.monotonic() - t_stall)
        rcs = [p.poll() for p in cps]
        rss_stall = proc_status_kb(daemon.pid, "VmHWM")
        print(f"   stalled cps returned at {', '.join(f'{x:.1f}' for x in ends)} s "
              f"(the fault cleared at {t_cleared:.1f} s), exit codes "
              f"{rcs}; creates in flight when the reads ended: {in_flight_after}", flush=True)

        # --- the fake's own speed (anthropic): one part straight against it ----------------
        if anth:
            out = os.path.join(disk, "gen", "created.json")
            t_create = timed(fake.curl("POST", API, out=out, data=body))
            with open(out) as f:
                bid = json.load(f)["id"]
            time.sleep(1.5)  # processing_s = 1
            t_poll = timed(fake.curl("GET", f"{API}/{bid}"))
            t_res1 = timed(fake.curl("GET", f"{API}/{bid}/results"))
            t_res2 = timed(fake.curl("GET", f"{API}/{bid}/results"))
            os.unlink(body)
            k = min(n, a.per_part)
            line = (f"floor: the fake alone, one part of {k} requests: create {t_create:.2f} s, "
                    f"poll of the ended batch {t_poll:.2f} s, results {t_res1:.2f} s the first "
                    f"time, {t_res2:.2f} s the second (cached); times {parts} parts: submit "
                    f">= {parts * t_create:.1f} s, results >= {parts * (t_poll + t_res1):.1f} s "
                    f"(creates are serial; polls and downloads serial per remote)")
            print(line, flush=True)
            summary.append(line)

        t_stored = log_times(log_path, f"'{last_pid}': ")
        if t_stored:
            line = (f"note: the last part's \"results stored\" log line (written once its ingest "
                    f"call returned) came {t_stored[-1] - t_ready_d:+.1f} s after status said "
                    f"ready")
            print(line)
            summary.append(line)

        # --- 3. peak RSS ---------------------------------------------------------------------
        hwm = proc_status_kb(daemon.pid, "VmHWM")
        ok = "PASS" if hwm < RSS_LIMIT_MB * 1024 else "FAIL"
        line = (f"3. daemon peak RSS (VmHWM) over the run: {hwm / 1024:.1f} MB ({ok}, limit "
                f"{RSS_LIMIT_MB} MB; VmHWM after submit {rss_submit / 1024:.1f} MB, results "
                f"ready {rss_results / 1024:.1f} MB, cat results.jsonl {rss_cat / 1024:.1f} MB, "
                f"status reads {rss_idle / 1024:.1f} MB, stalled commits "
                f"{rss_stall / 1024:.1f} MB)")
        print(line)
        summary.append(line)
        summary.append(f"peak use of the loop disk {gb(mon.peak_disk):.1f} GB (WAL peak "
                       f"{gb(mon.peak_wal):.2f} GB); load average {os.getloadavg()[0]:.2f}; "
                       f"status p99 target < 1000 us: idle {idle_p99:.0f} us, "
                       f"stalled {stalled_p99:.0f} us")
        print("\nSUMMARY (" + f"N={n}, provider={a.provider}" + ")")
        for x in summary:
            print("  " + x)
        sys.stdout.flush()
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
