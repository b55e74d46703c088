"""Start a batchfs daemon on a temp dir, wait for the mount, unmount, kill, scan the log.

Written for the fixtures in conftest.py. Waits poll /proc/self/mountinfo (never stat the
mountpoint: stat on a wedged FUSE mount hangs the test).
"""
import os
import re
import signal
import subprocess
import time

SANITIZER_PATTERNS = [r"ERROR: AddressSanitizer", r"runtime error:", r"LeakSanitizer",
                      r"ERROR: ThreadSanitizer"]


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Poll cond() until it returns a truthy value; return it. Fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ")
            if mp == path and " - fuse" in line:
                return True
    return False


class Mount:
    """A running batchfs. path: the mountpoint; log: its stderr file."""

    def __init__(self, binary, path, config, cache, log, extra_opts=(), env=None, wrapper=None,
                 flags=()):
        self.binary = binary
        self.path = str(path)
        self.config = str(config)
        self.cache = str(cache)
        self.log = str(log)
        self.extra_opts = list(extra_opts)
        self.flags = list(flags)  # daemon flags besides -f and -o (e.g. -s)
        self.env = env
        self.wrapper = wrapper or []
        self.proc = None
        self.expected_log = []
        self.starts = 0

    @property
    def cmd(self):
        opts = [f"config={self.config}", f"cache={self.cache}", "auto_unmount"]
        opts += self.extra_opts
        return self.wrapper + [self.binary, "-f", *self.flags, "-o", ",".join(opts), self.path]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        os.makedirs(self.path, exist_ok=True)
        self.starts += 1
        logf = open(self.log, "ab")
        logf.write(f"--- start {self.starts}: {' '.join(self.cmd)}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(self.cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     env=self.env)
        logf.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"batchfs exited with {self.proc.returncode} before "
                                     f"mounting; log:\n{self.read_log()}")
            return is_mounted(self.path)
        wait_for(up, timeout, what=f"mount at {self.path}")

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def unmount(self, timeout=10):
        """Clean unmount; asserts the daemon exits 0."""
        if not self.proc:
            return
        subprocess.run(["fusermount3", "-u", self.path], check=True)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("batchfs did not exit within %ss of unmount" % timeout)
        self.proc = None
        assert rc == 0, f"batchfs exited with {rc}; log:\n{self.read_log()}"

    def cleanup(self):
        """After a failure: lazy unmount, then TERM, then KILL."""
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", self.path], stderr=subprocess.DEVNULL)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self, sig=signal.SIGKILL):
        """Kill the daemon (a crash), and clear the dead mount."""
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.proc = None
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", self.path], stderr=subprocess.DEVNULL)
        wait_for(lambda: not is_mounted(self.path), 10, what="dead mount to go away")

    def restart(self):
        self.unmount()
        self.start()

    def expect_log(self, regex):
        """Whitelist log lines matching regex in the error scan."""
        self.expected_log.append(re.compile(regex))

    def log_problems(self):
        text = self.read_log()
        problems = []
        for pat in SANITIZER_PATTERNS:
            if re.search(pat, text):
                problems.append(f"sanitizer report ({pat})")
        for line in text.splitlines():
            if re.match(r"^batchfs: (error|crit|alert|emerg)\b", line) and \
                    not any(r.search(line) for r in self.expected_log):
                problems.append(f"unexpected error line: {line}")
        return problems
