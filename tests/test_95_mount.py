"""Mounting like a real filesystem: sharing with allow_other, owner options, mount(8) and fstab,
systemd readiness and unit, start-up guards, logs."""
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading

import pytest

from conftest import NOBODY, unique, write_config
from bfs import anthropic_requests, wait_state
from mount import is_mounted, wait_for



def run(cmd, env=None, timeout=30):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def as_nobody(*cmd):
    return run(NOBODY + list(cmd))


def unmount_background(mp, cache):
    """Unmounts a daemon started without -f and waits for it to exit (its pid is in the
    cache's lock file)."""
    try:
        pid = int(open(os.path.join(cache, "lock")).read().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    subprocess.run(["fusermount3", "-u", str(mp)], stderr=subprocess.DEVNULL)
    if pid:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="the daemon to exit")


# --- allow_other, uid=, gid=, umask= ----------------------------------------------------------

def test_allow_other_lets_other_users_read_but_not_write(shared_mount):
    m = shared_mount("allow_other")
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(1))
    wait_state(d, "completed")
    # another user sees the tree...
    r = as_nobody("cat", os.path.join(d, "status"))
    assert r.returncode == 0 and '"state"' in r.stdout
    # ...but cannot cancel or refresh the owner's batch, make a batch or write a draft
    r = as_nobody("sh", "-c", f"echo refresh > '{d}/ctl'")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_nobody("mkdir", os.path.join(m.path, "mock", unique()))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    draft = os.path.join(m.path, "mock", unique())
    os.mkdir(draft)
    r = as_nobody("sh", "-c", f"echo '{{}}' > '{draft}/requests.jsonl'")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert not os.path.exists(os.path.join(draft, "requests.jsonl"))
    # the owner still can
    with open(os.path.join(d, "ctl"), "w") as f:
        f.write("refresh\n")


def test_uid_gid_umask_are_what_stat_shows(shared_mount):
    m = shared_mount("uid=4242", "gid=4343", "umask=027")
    d = os.path.join(m.path, "mock", unique())
    os.mkdir(d)
    for p in (m.path, os.path.join(m.path, "mock"), d, os.path.join(d, "status")):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (4242, 4343), p
        assert stat.S_IMODE(st.st_mode) & 0o027 == 0, p
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(os.path.join(d, "status")).st_mode) == 0o440
    # readdirplus answers the same as stat
    r = run(["stat", "-c", "%n %u %g %a", *[os.path.join(d, n) for n in os.listdir(d)]])
    assert r.returncode == 0
    for line in r.stdout.splitlines():
        _, uid, gid, mode = line.split()
        assert (uid, gid) == ("4242", "4343") and int(mode, 8) & 0o027 == 0, line


@pytest.mark.parametrize("opt, word", [("uid=bob", "numeric id"), ("umask=999", "octal")])
def test_bad_owner_options_are_refused(batchfs_bin, tmp_path, opt, word):
    (tmp_path / "m").mkdir()
    r = run([batchfs_bin, "-f", "-o", f"cache={tmp_path}/c,{opt}", str(tmp_path / "m")])
    assert r.returncode != 0 and opt in r.stderr and word in r.stderr


def test_source_names_the_mount_and_the_type_is_fuse_batchfs(batchfs_bin, tmp_path):
    mp = tmp_path / "m"
    mp.mkdir()
    r = run([batchfs_bin, "-o", f"cache={tmp_path}/c", "my-batches", str(mp)])
    try:
        assert r.returncode == 0, r.stderr
        with open("/proc/self/mountinfo") as f:
            line = next(x for x in f if f" {mp} " in x)
        assert line.split(" - ")[1].split()[:2] == ["fuse.batchfs", "my-batches"]
    finally:
        unmount_background(mp, tmp_path / "c")


# --- guards -----------------------------------------------------------------------------------

def test_non_empty_mount_point_is_refused_unless_nonempty(batchfs_bin, tmp_path, mount_factory):
    mp = tmp_path / "m"
    mp.mkdir()
    (mp / "notes.txt").write_text("mine\n")
    try:
        r = run([batchfs_bin, "-o", f"cache={tmp_path}/c", str(mp)])
        assert r.returncode == 1
        assert f"mount point '{mp}' is not empty" in r.stderr and "nonempty" in r.stderr
        assert not is_mounted(mp)
    finally:
        if is_mounted(mp):
            unmount_background(mp, tmp_path / "c")
    m = mount_factory(extra_opts=["nonempty"])
    assert os.listdir(m.path) == ["mock"]


def test_a_live_mount_point_is_refused(mock_mount, batchfs_bin, tmp_path):
    r = run([batchfs_bin, "-o", f"cache={tmp_path}/other", mock_mount.path])
    if r.returncode == 0:  # mounted on top: take it away before failing
        unmount_background(mock_mount.path, tmp_path / "other")
    assert r.returncode == 1 and "is not empty" in r.stderr


def test_a_cache_in_use_is_refused_until_its_daemon_dies(mount_factory, batchfs_bin, tmp_path):
    m = mount_factory()
    (tmp_path / "m2").mkdir()
    cmd = [batchfs_bin, "-f", "-o", f"config={m.config},cache={m.cache},auto_unmount",
           str(tmp_path / "m2")]
    r = run(cmd)
    assert r.returncode == 1
    assert f"cache directory '{m.cache}' is in use by batchfs pid {m.pid} " \
           f"mounted on '{m.path}'" in r.stderr
    assert not is_mounted(tmp_path / "m2")
    m.kill()  # a dead daemon's lock goes with it
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: is_mounted(tmp_path / "m2") or p.poll() is not None, 20,
                 what="the second mount")
        assert is_mounted(tmp_path / "m2"), p.stderr.read()
    finally:
        subprocess.run(["fusermount3", "-u", str(tmp_path / "m2")], stderr=subprocess.DEVNULL)
        assert p.wait(10) == 0


def test_relative_cache_and_config_in_the_background(batchfs_bin, tmp_path):
    # libfuse's detach changes directory to /: relative paths must be resolved before.
    (tmp_path / "m").mkdir()
    write_config(tmp_path / "cfg", {"rel": {"provider": "mock"}})
    try:
        r = subprocess.run([batchfs_bin, "-o", "config=cfg,cache=not-yet/cache", "m"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert is_mounted(tmp_path / "m")
        assert os.listdir(tmp_path / "m") == ["rel"]
        assert (tmp_path / "not-yet" / "cache").is_dir()
    finally:
        unmount_background(tmp_path / "m", tmp_path / "not-yet" / "cache")


def test_background_errors_exit_non_zero(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text("[x]\nprovider = bogus\n")
    r = run([batchfs_bin, "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c", str(tmp_path / "m")])
    assert r.returncode == 1 and "unknown provider 'bogus'" in r.stderr
    r = run([batchfs_bin, "-o", f"cache={tmp_path}/c,log_file=/nonexistent/dir/log",
             str(tmp_path / "m")])
    assert r.returncode == 1 and "cannot open log file '/nonexistent/dir/log'" in r.stderr
    assert not is_mounted(tmp_path / "m")


NO_THREADS_C = r"""
#include <errno.h>
#include <pthread.h>
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg)
{
	(void)t; (void)a; (void)f; (void)arg;
	return EAGAIN;
}
"""


def test_an_error_after_the_detach_exits_non_zero(batchfs_bin, tmp_path):
    # The pollers start after the daemon has left the terminal: a failure there must still
    # reach the command's exit status and stderr (the parent waits for the child's verdict).
    (tmp_path / "nothreads.c").write_text(NO_THREADS_C)
    so = tmp_path / "nothreads.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(tmp_path / "nothreads.c")],
                   check=True)
    (tmp_path / "m").mkdir()
    env = dict(os.environ, LD_PRELOAD=str(so),
               ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    r = run([batchfs_bin, "-o", f"cache={tmp_path}/c", str(tmp_path / "m")], env=env)
    assert r.returncode == 1
    assert "batchfs: error: cannot start: cannot start the poller" in r.stderr
    assert not is_mounted(tmp_path / "m")


# --- logs -------------------------------------------------------------------------------------

def test_log_file_has_one_line_at_mount_and_one_at_unmount(mount_factory, tmp_path):
    log = tmp_path / "batchfs.log"
    m = mount_factory(extra_opts=[f"log_file={log}"])
    wait_for(lambda: log.exists() and "mounted on" in log.read_text(), what="the mount line")
    m.unmount()
    lines = log.read_text().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z batchfs\[\d+\]: info: batchfs .* mounted on "
                    + re.escape(f"'{m.path}'"), lines[0]), lines
    assert lines[-1].endswith("info: unmounted; stopping"), lines
    assert m.read_log().count("batchfs: info:") == 0  # nothing on stderr with a log file
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_log_level_error_drops_info(mount_factory, tmp_path):
    log = tmp_path / "batchfs.log"
    m = mount_factory(extra_opts=[f"log_file={log}", "log_level=error"])
    m.unmount()
    assert log.read_text() == ""


def test_bad_log_level_is_refused(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    r = run([batchfs_bin, "-f", "-o", f"cache={tmp_path}/c,log_level=loud", str(tmp_path / "m")])
    assert r.returncode == 1
    assert "log_level=loud is not error, warn, info or debug" in r.stderr


FUSE_TRACE = re.compile(r"unique: \d+, opcode: ")


def test_d_is_batchfs_debug_only_and_debug_fuse_the_trace(mount_factory):
    m = mount_factory(flags=["-d"], name="d")
    os.mkdir(os.path.join(m.path, "mock", "x"))
    m.unmount()
    text = m.read_log()
    assert "batchfs: debug: batch 'x' created as a draft" in text
    assert not FUSE_TRACE.search(text)
    m = mount_factory(extra_opts=["debug_fuse"], name="fuse")
    os.mkdir(os.path.join(m.path, "mock", "x"))
    m.unmount()
    text = m.read_log()
    assert FUSE_TRACE.search(text) and "batchfs: info:" in text
    assert "created as a draft" not in text  # batchfs's own level stays info


# --- systemd readiness ------------------------------------------------------------------------

def test_ready_is_sent_once_the_mount_is_visible_and_stopping_at_unmount(batchfs_bin, tmp_path):
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    mp = tmp_path / "m"
    mp.mkdir()
    got = []

    def listen():
        try:
            while True:
                msg = sock.recv(4096).decode()
                got.append((msg, is_mounted(mp)))
                if "STOPPING=1" in msg:
                    return
        except OSError:
            return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    p = subprocess.Popen([batchfs_bin, "-f", "-o", f"cache={tmp_path}/c", str(mp)], env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any("READY=1" in g for g, _ in got), 20, what="READY=1")
        ready = [vis for g, vis in got if "READY=1" in g]
        assert ready == [True]  # visible in mountinfo when READY=1 arrived
        assert os.listdir(mp) == ["mock"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)])
        p.wait(10)
    t.join(10)
    sock.close()
    assert p.returncode == 0
    assert [g for g, _ in got if "STOPPING=1" in g]


# --- meson install, mount(8), fstab, the systemd unit -----------------------------------------

@pytest.fixture(scope="module")
def installed(batchfs_bin, tmp_path_factory):
    """meson install of the build under test into a DESTDIR; returns (destdir, prefix)."""
    build = os.path.dirname(os.path.dirname(os.path.realpath(batchfs_bin)))
    if not os.path.exists(os.path.join(build, "meson-info")):
        pytest.fail(f"BATCHFS_BIN={batchfs_bin} is not in a meson build directory")
    dest = str(tmp_path_factory.mktemp("dest"))
    r = run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild", "--quiet"],
            timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["meson", "introspect", "--buildoptions", build])
    prefix = re.search(r'"name": "prefix", "value": "([^"]+)"', r.stdout).group(1)
    return dest, prefix


def in_namespace(installed, script):
    """Runs script with sh in a private mount namespace where the install's bin directory
    covers PREFIX/bin: what mount(8) and systemd find is the build under test, and nothing of
    the machine changes. mount(8) gives its helper no PATH: sh's default path is searched."""
    dest, prefix = installed
    bindir = prefix + "/bin"
    return run(["unshare", "-m", "--propagation", "private", "sh", "-euc",
                f"mount --bind '{dest}{bindir}' '{bindir}'\n{script}"], timeout=120)


def test_meson_install_installs_binary_man_page_and_unit(installed):
    dest, prefix = installed
    for p in ("bin/batchfs", "share/man/man1/batchfs.1", "lib/systemd/user/batchfs.service"):
        assert os.path.exists(f"{dest}{prefix}/{p}"), p
    unit = open(f"{dest}{prefix}/lib/systemd/user/batchfs.service").read()
    assert f"ExecStart={prefix}/bin/batchfs -f" in unit and "Type=notify" in unit
    assert re.search(r"^ExecStartPre=-\S*fusermount3 -uz %h/batchfs$", unit, re.M)
    assert "@" not in "".join(x for x in unit.splitlines() if not x.startswith("#"))


def test_the_unit_passes_systemd_analyze_verify(installed, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    dest, prefix = installed
    unit = f"{dest}{prefix}/lib/systemd/user/batchfs.service"
    # Documentation=man:batchfs(1) is checked with man(1), against the installed page
    man = "" if shutil.which("man") else "--man=no "
    r = in_namespace(installed, f"HOME='{tmp_path}' XDG_RUNTIME_DIR='{tmp_path}' "
                                f"MANPATH='{dest}{prefix}/share/man' "
                                f"systemd-analyze --user verify {man}'{unit}' 2>&1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "batchfs.service" not in r.stdout, r.stdout


def mount_script(tmp_path, mount_cmd):
    mp, cache = tmp_path / "m", tmp_path / "c"
    mp.mkdir()
    return f"""{mount_cmd}
grep -q ' {mp} .* - fuse.batchfs batchfs ' /proc/self/mountinfo
ls '{mp}' > '{tmp_path}/ls.out'
pid=$(cut -d' ' -f1 '{cache}/lock')
umount '{mp}'
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
"""


def test_mount_t_fuse_batchfs(installed, tmp_path):
    write_config(tmp_path / "cfg", {"one": {"provider": "mock"}})
    r = in_namespace(installed, mount_script(
        tmp_path, f"mount -t fuse.batchfs batchfs '{tmp_path}/m' "
                  f"-o config='{tmp_path}/cfg',cache='{tmp_path}/c'"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ls.out").read_text() == "one\n"


def test_mount_a_of_an_fstab_line(installed, tmp_path):
    write_config(tmp_path / "cfg", {"two": {"provider": "mock"}})
    fstab = tmp_path / "fstab"
    fstab.write_text(f"batchfs {tmp_path}/m fuse.batchfs "
                     f"config={tmp_path}/cfg,cache={tmp_path}/c,x-systemd.automount,_netdev,"
                     f"nofail 0 0\n")
    r = in_namespace(installed, mount_script(tmp_path, f"mount -a -T '{fstab}'"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ls.out").read_text() == "two\n"
