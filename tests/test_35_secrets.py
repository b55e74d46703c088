"""Secrets stay where they are: a key command gets a clean environment (not another remote's
key), and once the keys are loaded the daemon cannot dump core."""
import os

from fake_anthropic import KEY_ENV

SECRET = "sk-ant-api03-c2VjcmV0cy1zdGF5LXB1dA-batchfs-test-env-9d1e"


def test_a_key_command_does_not_see_another_remotes_key(fake_server, mount_factory, tmp_path):
    srv = fake_server("anthropic", api_key=SECRET)
    seen = tmp_path / "env.txt"
    common = {"provider": "anthropic", "base_url": srv.url, "poll_interval": "0.2",
              "list_interval": "0.5"}
    m = mount_factory({"a": dict(common, api_key_env=KEY_ENV),
                       "b": dict(common, api_key_command=f"env > {seen}; echo {SECRET}")},
                      env={KEY_ENV: SECRET, "BFS_UNRELATED": "x"})
    assert sorted(os.listdir(m.path)) == ["a", "b"]
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert SECRET not in seen.read_text()
    assert KEY_ENV not in env and "BFS_UNRELATED" not in env
    assert env.get("PATH") and env.get("HOME")


def test_the_daemon_cannot_dump_core(mock_mount):
    with open(f"/proc/{mock_mount.pid}/limits") as f:
        core = [line for line in f if line.startswith("Max core file size")][0]
    assert core.split()[4:6] == ["0", "0"], core
