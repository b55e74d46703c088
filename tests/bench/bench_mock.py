#!/usr/bin/env python3
"""batchfs benchmark on the offline `mock` provider (not a test: it prints figures).

Submits N requests (default 100,000, about 250 MB) with `cp`, waits for the results, and prints
in one run, each against a baseline measured in the same run on the same fresh loop-mounted
ext4 image (the root file system here is unjournaled ext4 whose speed varies after big deletes):

  - submit: `cp requests.jsonl` into the batch (validation + submit) vs `cp` to local disk
  - `ls -l results/ | wc -l` vs the same tree copied to local disk
  - `cat results/* >/dev/null` vs the same on local disk
  - `cat status` latency, median and p99
  - the daemon's peak RSS (VmHWM)

Targets: listing and reading within 2x local disk, status p99 under 1 ms, peak RSS under 64 MB.
Usage (root, for the loop mount): BATCHFS_BIN=build/src/batchfs python3 tests/bench/bench_mock.py [N]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from mount import is_mounted, wait_for  # noqa: E402


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def timed(cmd, repeat=3):
    """Best of `repeat` wall-clock runs of a shell command (seconds)."""
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        sh(cmd, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def make_requests(path, n):
    pad = "lorem ipsum dolor sit amet " * 90  # ~2.4 KB per line, ~250 MB at 100k
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"req-{i:06d}", "params": {
                "model": "mock", "max_tokens": 64,
                "messages": [{"role": "user", "content": f"{i} {pad}"}]}},
                separators=(",", ":")) + "\n")


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    binary = os.environ.get("BATCHFS_BIN", os.path.join(HERE, "..", "..", "build", "src",
                                                        "batchfs"))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it loop-mounts a fresh ext4 image)")
    work = tempfile.mkdtemp(prefix="bfsbench-")
    img, disk = os.path.join(work, "disk.img"), os.path.join(work, "disk")
    size_mb = max(1024, n * 40 // 1000 + 1024)  # sparse; inputs, spool, cache, local copies
    os.mkdir(disk)
    sh(f"truncate -s {size_mb}M {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {disk}")
    proc = None
    mnt = os.path.join(disk, "mnt")
    try:
        for d in ("mnt", "cache", "local", "gen"):
            os.mkdir(os.path.join(disk, d))
        cfg = os.path.join(disk, "config")
        with open(cfg, "w") as f:
            f.write("[mock]\nprovider = mock\nmock_delay = 1\npoll_interval = 0.2\n")
        reqs = os.path.join(disk, "gen", "requests.jsonl")
        make_requests(reqs, n)
        mb = os.path.getsize(reqs) / 1e6
        print(f"requests: {n} lines, {mb:.0f} MB")

        log = open(os.path.join(work, "daemon.log"), "wb")
        proc = subprocess.Popen([binary, "-f", "-o", f"config={cfg},cache={disk}/cache", mnt],
                                stdout=log, stderr=log)
        wait_for(lambda: is_mounted(mnt), 20, what="mount")
        batch = os.path.join(mnt, "mock", "bench")
        os.mkdir(batch)

        sh("sync")
        t_local_cp = timed(f"cp {reqs} {disk}/local/requests.jsonl", repeat=1)
        t = time.perf_counter()
        sh(f"cp {reqs} {batch}/requests.jsonl")
        t_submit = time.perf_counter() - t
        print(f"submit (cp into batch, validated + submitted): {t_submit:.2f} s; "
              f"cp to local disk: {t_local_cp:.2f} s; ratio {t_submit / t_local_cp:.2f}x")

        t = time.perf_counter()
        wait_for(lambda: os.path.isdir(os.path.join(batch, "results")), 600, interval=0.2,
                 what="results")
        print(f"results ready {time.perf_counter() - t:.1f} s after submit returned")

        local_results = os.path.join(disk, "local", "results")
        sh(f"cp -r {batch}/results {local_results}")
        ls_fs = timed(f"ls -l {batch}/results | wc -l")
        ls_local = timed(f"ls -l {local_results} | wc -l")
        count = subprocess.run(f"ls {batch}/results | wc -l", shell=True, capture_output=True,
                               text=True).stdout.strip()
        print(f"ls -l results/ | wc -l ({count} files): batchfs {ls_fs * 1000:.0f} ms, "
              f"local {ls_local * 1000:.0f} ms, ratio {ls_fs / ls_local:.2f}x (target <= 2x)")
        # `cat results/*` exceeds ARG_MAX at 100k names: the shell's own printf feeds xargs,
        # which runs cat on as many names as fit, as a user would have to.
        cat_cmd = "cd {} && printf '%s\\0' * | xargs -0 cat >/dev/null"
        # Cold: page cache dropped on both sides (the first read of fresh results). Warm: best
        # of three, both sides in the page cache (batchfs keeps it for immutable results).
        cold = {}
        for side, path in (("fs", f"{batch}/results"), ("local", local_results)):
            sh("sync && echo 3 > /proc/sys/vm/drop_caches")
            cold[side] = timed(cat_cmd.format(path), repeat=1)
        print(f"cat results/* (via xargs) >/dev/null, cold: batchfs {cold['fs'] * 1000:.0f} ms, "
              f"local {cold['local'] * 1000:.0f} ms, ratio {cold['fs'] / cold['local']:.2f}x "
              f"(target <= 2x)")
        cat_fs = timed(cat_cmd.format(f"{batch}/results"))
        cat_local = timed(cat_cmd.format(local_results))
        print(f"cat results/* (via xargs) >/dev/null, warm: batchfs {cat_fs * 1000:.0f} ms, "
              f"local {cat_local * 1000:.0f} ms, ratio {cat_fs / cat_local:.2f}x (target <= 2x)")
        jl_fs = timed(f"cat {batch}/results.jsonl >/dev/null")
        print(f"cat results.jsonl: {jl_fs * 1000:.0f} ms "
              f"({os.path.getsize(os.path.join(batch, 'results.jsonl')) / 1e6:.0f} MB)")

        lat = []
        status = os.path.join(batch, "status")
        for _ in range(3000):
            t = time.perf_counter()
            with open(status, "rb") as f:
                f.read()
            lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        p99 = lat[int(len(lat) * 0.99)]
        print(f"cat status: median {statistics.median(lat):.0f} us, p99 {p99:.0f} us "
              f"(target p99 < 1000 us)")
        print(f"daemon peak RSS (VmHWM): {vm_hwm_kb(proc.pid) / 1024:.1f} MB (target < 64 MB)")
    finally:
        if proc:
            subprocess.run(["fusermount3", "-u", mnt])
            proc.wait(30)
        sh(f"umount {disk}; rm -rf {work}")


if __name__ == "__main__":
    main()
