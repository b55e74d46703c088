"""Fixtures: the daemon binary, FUSE preconditions, the fake providers, mounts."""
import itertools
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))

from fake_server import load_flavour  # noqa: E402
from mount import Mount, wait_for  # noqa: E402

_counter = itertools.count(1)

# Runs a command as another user (nobody), to see the mount as users other than its owner.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def unique(prefix="b"):
    """A fresh batch name (tests share nothing)."""
    return f"{prefix}{next(_counter)}"


@pytest.fixture(scope="session")
def batchfs_bin():
    path = os.environ.get("BATCHFS_BIN")
    if not path:
        pytest.fail("BATCHFS_BIN is not set: run the suite with `meson test -C build` "
                    "or set BATCHFS_BIN to the built batchfs binary")
    if not os.access(path, os.X_OK):
        pytest.fail(f"BATCHFS_BIN={path} is not an executable")
    return path


@pytest.fixture(scope="session", autouse=True)
def fuse_preconditions():
    # Fail, do not skip: a skipped suite would report success having tested nothing.
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: the mount tests cannot run")
    if not shutil.which("fusermount3"):
        pytest.fail("fusermount3 is missing (apt-get install fuse3)")


def write_config(path, sections):
    """sections: {remote: {key: value}} -> INI file."""
    with open(path, "w") as f:
        for name, keys in sections.items():
            f.write(f"[{name}]\n")
            for k, v in keys.items():
                f.write(f"{k} = {v}\n")
            f.write("\n")


@pytest.fixture
def mount_factory(batchfs_bin, tmp_path, request):
    """mount_factory(sections, env=None, flags=()) -> a started Mount. Always unmounted
    afterwards. flags: daemon flags besides -f and -o (e.g. ["-s"])."""
    mounts = []

    def make(sections=None, env=None, name="mnt", extra_opts=(), flags=()):
        sections = sections or {"mock": {"provider": "mock", "mock_delay": "1"}}
        base = tmp_path / name
        base.mkdir()
        cfg = base / "config"
        write_config(cfg, sections)
        full_env = dict(os.environ)
        # Test-only: Azure remotes keep a poll_interval under Azure's 60 s (src/conf.c).
        full_env.update(env or {})
        wrapper = os.environ.get("BATCHFS_TEST_WRAPPER", "").split()
        m = Mount(batchfs_bin, base / "m", cfg, base / "cache", base / "log",
                  extra_opts=extra_opts, env=full_env, wrapper=wrapper, flags=flags)
        mounts.append(m)
        m.start()
        return m

    yield make

    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else True
    problems = []
    for m in mounts:
        try:
            if m.proc is not None:
                m.unmount()
        except Exception as e:  # keep going: every mount must be cleaned up
            problems.append(f"unmount: {e}")
            m.cleanup()
        problems += m.log_problems()
        if failed or problems:
            sys.stderr.write(f"\n--- batchfs command: {' '.join(m.cmd)}\n--- log:\n"
                             f"{m.read_log()}\n")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def shared_dir():
    """A directory other users can reach (pytest's tmp_path is 0700 and root's)."""
    d = tempfile.mkdtemp(prefix="bfs-shared-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["fusermount3", "-uz", os.path.join(d, "m")], stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shared_mount(batchfs_bin, shared_dir):
    """shared_mount(*opts) -> a started Mount with one remote 'mock' (1 s batches) in
    shared_dir, which other users can reach; unmounted afterwards, its log scanned."""
    mounts = []

    def make(*opts):
        os.makedirs(os.path.join(shared_dir, "priv"), mode=0o700, exist_ok=True)
        cfg = os.path.join(shared_dir, "priv", "config")
        write_config(cfg, {"mock": {"provider": "mock", "mock_delay": "1"}})
        m = Mount(batchfs_bin, os.path.join(shared_dir, "m"), cfg,
                  os.path.join(shared_dir, "priv", "cache"),
                  os.path.join(shared_dir, "priv", "log"), extra_opts=list(opts))
        mounts.append(m)
        m.start()
        return m

    yield make
    problems = []
    for m in mounts:
        try:
            m.unmount()
        except Exception as e:  # keep going: every mount must be cleaned up
            problems.append(f"unmount: {e}")
            m.cleanup()
        problems += m.log_problems()
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def fake_server():
    """fake_server(flavour, **config) -> a started fake provider (tests/lib/fake_*.py) on a
    free port of 127.0.0.1, in this process. Stopped afterwards."""
    servers = []

    def make(flavour, **config):
        srv = load_flavour(flavour)(**config).start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def mock_mount(mount_factory):
    """A mount with one offline remote 'mock' (1 s batches)."""
    return mount_factory()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
