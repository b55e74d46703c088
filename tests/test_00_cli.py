"""The command line and config, without a mount (errors must reach the terminal)."""
import subprocess

import pytest


def run(batchfs_bin, *args, env=None):
    return subprocess.run([batchfs_bin, *args], capture_output=True, text=True, timeout=30,
                          env=env)


def test_version_prints_version(batchfs_bin):
    r = run(batchfs_bin, "--version")
    assert r.returncode == 0
    assert r.stdout.startswith("batchfs ")


def test_help_lists_batchfs_options(batchfs_bin):
    r = run(batchfs_bin, "--help")
    assert r.returncode == 0
    assert "config=FILE" in r.stdout and "cache=DIR" in r.stdout


def test_missing_mountpoint_is_an_error(batchfs_bin):
    r = run(batchfs_bin)
    assert r.returncode != 0
    assert "mountpoint" in r.stderr


def test_missing_config_file_is_named(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    r = run(batchfs_bin, "-f", "-o", f"config={tmp_path}/nope,cache={tmp_path}/c",
            str(tmp_path / "m"))
    assert r.returncode != 0
    assert f"{tmp_path}/nope" in r.stderr


def test_unknown_provider_is_refused(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text("[x]\nprovider = bogus\n")
    r = run(batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
            str(tmp_path / "m"))
    assert r.returncode != 0
    assert "unknown provider 'bogus'" in r.stderr


def test_key_in_config_file_is_refused(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text("[c]\nprovider = anthropic\napi_key = sk-secret\n")
    r = run(batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
            str(tmp_path / "m"))
    assert r.returncode != 0
    assert "api_key_env" in r.stderr
    assert "sk-secret" not in r.stderr


@pytest.mark.parametrize("key, value", [("poll_interval", "soon"), ("list_interval", "-1"),
                                        ("reconcile_grace", "5m")])
def test_bad_interval_is_refused(batchfs_bin, tmp_path, key, value):
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text(f"[m]\nprovider = mock\n{key} = {value}\n")
    r = run(batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
            str(tmp_path / "m"))
    assert r.returncode != 0
    assert f"{key} must be a positive number of seconds, not '{value}'" in r.stderr


def test_a_misspelt_key_is_refused_with_the_keys_the_provider_reads(batchfs_bin, tmp_path):
    # A typo must not silently fall back to a default (here: another API key variable).
    (tmp_path / "m").mkdir()
    (tmp_path / "cfg").write_text("[claude]\nprovider = anthropic\napi_key_evn = MY_KEY\n")
    r = run(batchfs_bin, "-f", "-o", f"config={tmp_path}/cfg,cache={tmp_path}/c",
            str(tmp_path / "m"), env={"ANTHROPIC_API_KEY": "x", "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "[claude] unknown key 'api_key_evn' for provider anthropic" in r.stderr
    assert "api_key_env" in r.stderr


def test_help_does_not_advertise_libfuse_thread_options(batchfs_bin):
    # batchfs sizes its own thread pool: libfuse's max_threads and friends would do nothing.
    r = run(batchfs_bin, "--help")
    assert r.returncode == 0
    assert "max_threads" not in r.stdout and "max_idle_threads" not in r.stdout
    assert "[SOURCE] MOUNTPOINT" in r.stdout and "allow_other" in r.stdout


def test_more_than_source_and_mountpoint_is_an_error(batchfs_bin, tmp_path):
    (tmp_path / "m").mkdir()
    r = run(batchfs_bin, "-f", "-o", f"cache={tmp_path}/c", "batchfs", str(tmp_path / "m"),
            "extra")
    assert r.returncode != 0
    assert "too many arguments: [SOURCE] MOUNTPOINT" in r.stderr
