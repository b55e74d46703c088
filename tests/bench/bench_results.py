#!/usr/bin/env python3
"""batchfs benchmark of issue "results at disk speed" (not a test: it prints figures).

N Anthropic requests (default 100,000, 248 MB; results about 2.9 KB each) against an
Anthropic-shaped server that ends each batch as soon as it is created (tests/bench/
fast_anthropic.py, which checks nothing, so the figures are batchfs's and not a Python fake's).
Everything runs on one fresh loop-mounted ext4 image, and each row is printed with its baseline
measured in the same run and the ratio against the goal:

  submit        `cp requests.jsonl` into a batch returns (validated and uploaded)
                vs `cp` to local disk + `curl -T` upload of the same bytes to the same server
                (whose /sink counts the requests as a create does: the same work per byte)
  ingest        from cp's return until status says results "ready"
                vs `curl` download of the same result bytes into one local file (+ fsync:
                batchfs makes results durable before it says ready; both figures printed),
                run from free memory as the ingest is (caches dropped, the freed memory
                given back to the host first: see from_free_memory); the curl right after
                the ingest, on the page cache it filled, is printed too
  results.jsonl `cat` of it, cold (caches dropped) and warm, vs the same file on local disk
  results/*     `cat` of every file (xargs), cold and warm, vs the same tree on local disk;
                and the floor: the same loop against a minimal libfuse low-level file system
                (tests/bench/floor_fs.c) serving that local tree with the same open flags
  ls -l         `ls -l results/` vs the local tree
  status        p99 of open+read+close, 8 concurrent readers; and its floors: the same
                readers on a copy of the text served by floor_fs as batchfs serves a version
                of status (FLOOR_VERSION), and as a live file (FLOOR_LIVE, how status was
                served before versions)
  RSS           the daemon's peak VmHWM, against 64 MB

Usage (root, for the loop mount and drop_caches):
  BATCHFS_BIN=build/src/batchfs python3 tests/bench/bench_results.py [N] [--per-part K]
      [--log FILE] [--perf] [--only submit|ingest|status|jsonl]
  (--only status: after the ingest, the status row alone, three rounds; --only jsonl: the
  results.jsonl rows alone, cold three times)
"""
import argparse
import contextlib
import json
import resource
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from bench_parts import (CLK_TCK, Daemon, Monitor, Perf, cpu_s, describe_lat, make_requests,  # noqa: E402
                         proc_status_kb, sh, start_server, stop_proc, status_latencies)
from mount import is_mounted, wait_for  # noqa: E402

KEY_ENV = "BFS_TEST_KEY"
FAKE_KEY = "sk-ant-api03-bench-key"
RSS_LIMIT_MB = 64


def make_results(path, n):
    """n succeeded Anthropic result lines (docs.anthropic.com, "Retrieving batch results"),
    in request order, about 2.9 KB each."""
    pad = "The answer is lorem ipsum dolor sit amet. " * 62
    head = ('{"custom_id":"req-%07d","result":{"type":"succeeded","message":{'
            '"id":"msg_%024d","type":"message","role":"assistant",'
            '"model":"claude-haiku-4-5","content":[{"type":"text","text":"%d ' + pad +
            '"}],"stop_reason":"end_turn","stop_sequence":null,'
            '"usage":{"input_tokens":620,"output_tokens":64}}}}\n')
    with open(path, "w") as f:
        step = 10000
        for base in range(0, n, step):
            f.write("".join(head % (i, i, i) for i in range(base, min(n, base + step))))


def drop_caches():
    sh("sync")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd, cold=False):
    if cold:
        drop_caches()
    t = time.perf_counter()
    sh(cmd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def from_free_memory(source):
    """Caches dropped, the server's source read back in, and (on a VM with free page
    reporting) the freed memory given back to the host before the next step: the memory state
    batchfs's ingest starts from (it runs on free memory), so a baseline after it does not run
    on the page cache the ingest just filled (recycled pages, no host fault at first touch)."""
    drop_caches()
    sh(f"cat {source} >/dev/null")
    if not os.path.exists(REPORTED):
        return
    last, still, t_end = None, 0, time.monotonic() + 30
    while time.monotonic() < t_end and still < 4:
        with open(REPORTED) as f:
            now = f.read().strip()
        still = still + 1 if now == last else 0
        last = now
        time.sleep(0.5)


def thread_cpu(pid):
    """CPU seconds of each thread of a process by its name (batchfs: FUSE and main threads)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except FileNotFoundError:
            continue  # ended meanwhile
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def thread_delta(before, after):
    """(name, CPU seconds) per thread name between two thread_cpu() snapshots, most first."""
    by = {}
    for tid, (name, t) in after.items():
        by[name] = by.get(name, 0) + t - before.get(tid, (name, 0))[1]
    return sorted(by.items(), key=lambda x: -x[1])


def machine_busy():
    """CPU seconds all CPUs spent on anything but idle and iowait so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def proc_cpu(pid):
    """(user, system) seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def best(cmd, runs=3):
    timed(cmd)  # warm
    return min(timed(cmd) for _ in range(runs))


def catall(tree):
    return f"cd {tree} && find . -type f -print0 | xargs -0 -n 20000 cat >/dev/null"


class Rows:
    def __init__(self):
        self.rows = []

    def add(self, name, value, base, goal, unit="s", note=""):
        ratio = value / base if base else float("inf")
        ok = "PASS" if ratio <= goal else "FAIL"
        self.rows.append((name, value, base, ratio, goal, ok, unit, note))
        print(f"  {name:<28} {value:8.3f} {unit}  baseline {base:8.3f} {unit}  "
              f"{ratio:5.2f}x (goal <= {goal}x) {ok} {note}", flush=True)

    def table(self, title):
        print(f"\nSUMMARY {title}")
        print(f"| row | batchfs | baseline | ratio | goal | |")
        print("|---|---|---|---|---|---|")
        for name, v, b, r, g, ok, unit, note in self.rows:
            print(f"| {name} | {v:.3f} {unit} | {b:.3f} {unit} | {r:.2f}x | <= {g}x | {ok} |"
                  + (f" {note}" if note else ""))


def build_floor(work):
    src = os.path.join(HERE, "floor_fs.c")
    out = os.path.join(work, "floor_fs")
    sh(f"cc -O2 -Wall -o {out} {src} $(pkg-config --cflags --libs fuse3)")
    return out


def _status_reader(args):
    path, count = args
    return status_latencies(path, count)


def status_p99_concurrent(path, readers=8, count=1000):
    """8 reader processes (not threads: Python threads would measure the GIL)."""
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(readers) as pool:
        lats = pool.map(_status_reader, [(path, count)] * readers)
    return describe_lat([x for lat in lats for x in lat])


class StatusFloor:
    """A floor of the status file: a copy of its text served by floor_fs, as batchfs serves a
    version of status (mode "version": entry timeout 0, attributes and pages kept) or as a
    live file (mode "live": no attribute or page cache, direct I/O), so the same 8 readers
    measure what the kernel and libfuse cost on this machine, batchfs's work excluded."""

    def __init__(self, work, disk, status_path, mode):
        src = os.path.join(disk, f"{mode}-src")
        os.makedirs(src, exist_ok=True)
        with open(status_path, "rb") as f, open(os.path.join(src, "status"), "wb") as g:
            g.write(f.read())
        self.mnt = os.path.join(disk, f"{mode}-floor")
        os.makedirs(self.mnt, exist_ok=True)
        env = dict(os.environ, FLOOR_SOURCE=src)
        env["FLOOR_VERSION" if mode == "version" else "FLOOR_LIVE"] = "1"
        self.proc = subprocess.Popen([build_floor(work), "-f", self.mnt],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env)
        wait_for(lambda: is_mounted(self.mnt), 20, what=f"{mode} floor mount")
        self.path = os.path.join(self.mnt, "status")

    def stop(self):
        subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
        self.proc.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=100000)
    ap.add_argument("--per-part", type=int, default=100000, help="max_requests of the remote")
    ap.add_argument("--log", help="keep the daemon's timestamped stderr in this file")
    ap.add_argument("--perf", action="store_true", help="perf record the daemon per phase")
    ap.add_argument("--hold", action="store_true",
                    help="after the ingest, keep the mount up for experiments until the file "
                    "it names is removed")
    ap.add_argument("--only", choices=["submit", "ingest", "status", "jsonl"],
                    help="submit, ingest: stop after it; status: after the ingest, only status; jsonl: only results.jsonl")
    a = ap.parse_args()
    # kill (as of a --hold) unmounts and removes the work tree as the end of a run does
    # (only in this process: the status readers' forked children are stopped by SIGTERM too)
    me = os.getpid()
    signal.signal(signal.SIGTERM,
                  lambda *_: sys.exit("bench: terminated") if os.getpid() == me else os._exit(1))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (loop mount, drop_caches)")
    binary = os.path.abspath(os.environ.get("BATCHFS_BIN", os.path.join(
        HERE, "..", "..", "build", "src", "batchfs")))
    n = a.n
    parts = -(-n // a.per_part)
    work = tempfile.mkdtemp(prefix="bfsbench-results-")
    free = shutil.disk_usage(work).free
    need = n * 20000
    if need > free:
        sys.exit(f"bench: {n} requests need about {need / 1e9:.0f} GB, {free / 1e9:.0f} free")
    size = min(max(4 << 30, n * 40000), int(free * 0.9))
    img, disk = os.path.join(work, "disk.img"), os.path.join(work, "disk")
    os.mkdir(disk)
    print(f"bench_results: N={n}, {parts} part(s), loop image {size / 1e9:.0f} GB (sparse) in "
          f"{work}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "(other work on the machine skews every figure)", flush=True)
    rows = Rows()
    stack = contextlib.ExitStack()
    try:
        sh(f"truncate -s {size} {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {disk}")
        stack.callback(lambda: subprocess.run(f"umount {disk} || umount -l {disk}", shell=True))
        for d in ("mnt", "cache", "local", "gen", "floor"):
            os.mkdir(os.path.join(disk, d))
        mnt, local = os.path.join(disk, "mnt"), os.path.join(disk, "local")
        reqs = os.path.join(disk, "gen", "requests.jsonl")
        results = os.path.join(disk, "gen", "results.jsonl")
        t = time.perf_counter()
        make_requests(reqs, n, "claude-haiku-4-5")
        make_results(results, n)
        print(f"generated {os.path.getsize(reqs) / 1e6:.1f} MB of requests and "
              f"{os.path.getsize(results) / 1e6:.1f} MB of results in "
              f"{time.perf_counter() - t:.1f} s", flush=True)

        srv_proc, url = start_server([sys.executable, os.path.join(HERE, "fast_anthropic.py"),
                                      results])
        stack.callback(stop_proc, srv_proc)
        cfg = os.path.join(disk, "config")
        with open(cfg, "w") as f:
            f.write(f"[bench]\nprovider = anthropic\nbase_url = {url}\napi_key_env = {KEY_ENV}\n"
                    f"poll_interval = 1\nlist_interval = 3600\nmax_requests = {a.per_part}\n")
        log_path = a.log or os.path.join(work, "daemon.log")
        daemon = Daemon(binary, cfg, os.path.join(disk, "cache"), mnt, log_path,
                        dict(os.environ, **{KEY_ENV: FAKE_KEY}))
        stack.callback(daemon.stop)

        def up():
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"batchfs exited {daemon.proc.returncode}; log {log_path}")
            return is_mounted(mnt)
        wait_for(up, 20, what="mount")
        mon = Monitor(daemon.pid, disk, os.path.join(disk, "cache"))
        mon.start()
        stack.callback(mon.stop.set)
        perf = Perf(a.perf, daemon.pid, work)
        batch = os.path.join(mnt, "bench", "big")
        os.mkdir(batch)

        # --- submit --------------------------------------------------------------------------
        print("\nsubmit", flush=True)
        sh("sync")
        t_cp = timed(f"cp {reqs} {local}/copy.jsonl")
        t_up = timed(f"curl -sS -f -H 'Expect:' -H 'Content-Type: application/json' "
                     f"-T {reqs} -X POST -o /dev/null '{url}/sink'")
        os.unlink(f"{local}/copy.jsonl")
        sh("sync")
        perf.start("submit")
        busy0, th0 = machine_busy(), thread_cpu(daemon.pid)
        seen, done = dict(th0), threading.Event()

        def sample():  # threads that end during the cp (the follower) count as last seen
            while not done.wait(0.02):
                seen.update(thread_cpu(daemon.pid))
        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.perf_counter()
        sh(f"cp {reqs} {batch}/requests.jsonl")
        t_sub = time.perf_counter() - t0
        done.set()
        sampler.join()
        seen.update(thread_cpu(daemon.pid))
        busy, th = machine_busy() - busy0, thread_delta(th0, seen)
        perf.stop("submit")
        print(f"  the machine's CPUs were {busy / t_sub / os.cpu_count() * 100:.0f}% busy "
              f"during the cp ({busy:.2f} CPU-s of {t_sub * os.cpu_count():.2f}); daemon "
              "threads: " + ", ".join(f"{n} {t:.2f} s" for n, t in th if t > 0), flush=True)
        rows.add("submit (cp returns)", t_sub, t_cp + t_up, 1.5,
                 note=f"(cp {t_cp:.3f} + curl upload {t_up:.3f})")
        if a.only == "submit":
            return 0

        # --- ingest --------------------------------------------------------------------------
        perf.start("ingest")
        d0 = proc_cpu(daemon.pid)

        def ready():
            with open(os.path.join(batch, "status"), "rb") as f:
                st = json.loads(f.read())
            if st.get("results") == "unavailable" or st.get("state") == "failed":
                raise RuntimeError(f"batch failed: {st}")
            return st.get("results") == "ready"
        wait_for(ready, 3600, interval=0.01, what="results ready")
        t_ing = time.perf_counter() - t0 - t_sub
        d1 = proc_cpu(daemon.pid)
        perf.stop("ingest")
        c0 = child_cpu()
        t_dl = timed(f"curl -sS -f -o {local}/dl.jsonl '{url}/file'")
        c1 = child_cpu()
        t_dls = timed(f"curl -sS -f -o {local}/dl.jsonl '{url}/file' && sync -d {local}/dl.jsonl")
        c2 = child_cpu()
        from_free_memory(results)
        t_dlf = timed(f"curl -sS -f -o {local}/dl2.jsonl '{url}/file'")
        c3 = child_cpu()
        from_free_memory(results)
        t_dlsf = timed(f"curl -sS -f -o {local}/dl3.jsonl '{url}/file' && "
                       f"sync -d {local}/dl3.jsonl")
        for f in ("dl.jsonl", "dl2.jsonl", "dl3.jsonl"):
            os.unlink(os.path.join(local, f))
        print("\ningest", flush=True)
        print(f"  CPU user/sys: batchfs {d1[0] - d0[0]:.2f}/{d1[1] - d0[1]:.2f} s, curl "
              f"{c1[0] - c0[0]:.2f}/{c1[1] - c0[1]:.2f} s, curl + fsync "
              f"{c2[0] - c1[0]:.2f}/{c2[1] - c1[1]:.2f} s, curl from free memory "
              f"{c3[0] - c2[0]:.2f}/{c3[1] - c2[1]:.2f} s", flush=True)
        print(f"  curl right after the ingest {t_dl:.3f} s (+ fsync {t_dls:.3f} s); from free "
              f"memory, as the ingest ran: {t_dlf:.3f} s (+ fsync {t_dlsf:.3f} s)", flush=True)
        rows.add("ingest (ready after end)", t_ing, t_dlf, 1.5,
                 note=f"(vs curl + fsync {t_dlsf:.3f}: {t_ing / t_dlsf:.2f}x; vs curl right "
                 f"after it {t_ing / t_dl:.2f}x)")
        if a.only == "ingest":
            hwm = proc_status_kb(daemon.pid, "VmHWM") / 1024
            print(f"  peak RSS so far {hwm:.1f} MB (VmHWM) "
                  f"{'PASS' if hwm <= RSS_LIMIT_MB else 'FAIL'} (goal <= {RSS_LIMIT_MB} MB); "
                  f"WAL peak {mon.peak_wal / 1e6:.1f} MB")
            return 0

        if a.only == "status":
            perf.start("status")
            floors = [StatusFloor(work, disk, os.path.join(batch, "status"), m)
                      for m in ("version", "live")]
            for f in floors:
                stack.callback(f.stop)
            for _ in range(3):
                c0 = cpu_s(daemon.pid)
                text, p99 = status_p99_concurrent(os.path.join(batch, "status"))
                print(f"  status, 8 readers x 1000: {text}; daemon CPU "
                      f"{(cpu_s(daemon.pid) - c0) / 8000 * 1e6:.0f} us per read "
                      f"{'PASS' if p99 < 1000 else 'FAIL'} (goal p99 <= 1 ms)", flush=True)
                for f, mode in zip(floors, ("version", "live")):
                    c0 = cpu_s(f.proc.pid)
                    text, p99f = status_p99_concurrent(f.path)
                    print(f"  {mode} floor, 8 readers x 1000: {text}; floor CPU "
                          f"{(cpu_s(f.proc.pid) - c0) / 8000 * 1e6:.0f} us per read; "
                          f"batchfs p99 {p99 / p99f:.2f}x of this floor's", flush=True)
            perf.stop("status")
            return 0

        if a.hold:
            hold = os.path.join(work, "hold")
            open(hold, "w").close()
            print(f"\nholding: batch {batch}, local {local}; rm {hold} to go on", flush=True)
            wait_for(lambda: not os.path.exists(hold), 1 << 30, interval=0.5, what="hold")

        # --- reads ---------------------------------------------------------------------------
        print("\nreads", flush=True)
        rj = os.path.join(batch, "results.jsonl")
        sh(f"cp {rj} {local}/results.jsonl")
        cold_b = timed(f"cat {rj}", cold=True)
        cold_l = timed(f"cat {local}/results.jsonl", cold=True)
        rows.add("cat results.jsonl cold", cold_b, cold_l, 1.5)
        rows.add("cat results.jsonl warm", best(f"cat {rj}"),
                 best(f"cat {local}/results.jsonl"), 1.5)
        if a.only == "jsonl":
            for _ in range(2):
                cold_b = timed(f"cat {rj}", cold=True)
                cold_l = timed(f"cat {local}/results.jsonl", cold=True)
                rows.add("cat results.jsonl cold", cold_b, cold_l, 1.5)
            return 0
        tree = os.path.join(local, "tree")
        sh(f"cp -r {batch}/results {tree}")
        res = os.path.join(batch, "results")
        cold_b = timed(catall(res), cold=True)
        cold_l = timed(catall(tree), cold=True)
        rows.add("cat results/* cold", cold_b, cold_l, 1.2)
        warm_b, warm_l = best(catall(res)), best(catall(tree))
        floor_bin = build_floor(work)
        floor = os.path.join(disk, "floor")
        fp = subprocess.Popen([floor_bin, "-f", floor],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, FLOOR_SOURCE=tree))
        stack.callback(lambda: (subprocess.run(["fusermount3", "-uz", floor],
                                               stderr=subprocess.DEVNULL), fp.wait(10)))
        wait_for(lambda: is_mounted(floor), 20, what="floor mount")
        warm_f = best(catall(floor))
        rows.add("cat results/* warm", warm_b, warm_l, 2.0,
                 note=f"(FUSE floor {warm_f:.3f} s: {warm_b / warm_f:.2f}x of it)")
        rows.add("ls -l results/", best(f"ls -l {res}"), best(f"ls -l {tree}"), 2.0)

        # --- status and memory ---------------------------------------------------------------
        text, p99 = status_p99_concurrent(os.path.join(batch, "status"))
        print(f"\n  status, 8 readers x 1000: {text}  "
              f"{'PASS' if p99 < 1000 else 'FAIL'} (goal p99 <= 1 ms)")
        vf = StatusFloor(work, disk, os.path.join(batch, "status"), "version")
        stack.callback(vf.stop)
        text, p99f = status_p99_concurrent(vf.path)
        print(f"  version floor (floor_fs, FLOOR_VERSION), 8 readers x 1000: {text}")
        lf = StatusFloor(work, disk, os.path.join(batch, "status"), "live")
        stack.callback(lf.stop)
        text, p99l = status_p99_concurrent(lf.path)
        print(f"  live floor (floor_fs, FLOOR_LIVE), 8 readers x 1000: {text}")
        hwm = proc_status_kb(daemon.pid, "VmHWM") / 1024
        print(f"  peak RSS {hwm:.1f} MB (VmHWM) {'PASS' if hwm <= RSS_LIMIT_MB else 'FAIL'} "
              f"(goal <= {RSS_LIMIT_MB} MB); WAL peak {mon.peak_wal / 1e6:.1f} MB")
        rows.table(f"N={n}, {parts} part(s), {os.cpu_count()} cores")
        print(f"| status p99, 8 readers | {p99 / 1000:.3f} ms | version floor {p99f / 1000:.3f} ms"
              f" (live {p99l / 1000:.3f} ms) | {p99 / p99f:.2f}x of the floor | <= 1 ms | "
              f"{'PASS' if p99 < 1000 else 'FAIL'} |")
        print(f"| peak RSS | {hwm:.1f} MB | | | <= {RSS_LIMIT_MB} MB | "
              f"{'PASS' if hwm <= RSS_LIMIT_MB else 'FAIL'} |")
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
