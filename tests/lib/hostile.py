"""Hostile providers: each provider family's fake (tests/lib/fake_*.py), a mount on it, and the
faults of fake_server.Fault that a hostile or broken service could answer with, aimed at the
request that downloads a batch's results.

    fam = family("openai", fake_server, mount_factory, tmp_path, **remote_keys)
    d = fam.submit(["q0", "q1"])            # a batch directory with those custom_ids
    fam.srv.add_fault(path=fam.results_path, action="trickle", ...)

The download requests are the documented ones:
  anthropic  GET /v1/messages/batches/{id}/results
             (https://docs.anthropic.com/en/api/retrieving-message-batch-results)
  openai     GET /v1/files/{output_file_id}/content
             (https://platform.openai.com/docs/api-reference/files/retrieve-contents)
  azure      GET /openai/files/{output_file_id}/content
             (https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch)
  vertex     GET /storage/v1/b/{bucket}/o/{.../predictions.jsonl}?alt=media
             (https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/batch,
             https://cloud.google.com/storage/docs/json_api/v1/objects/get)
"""
import json
import os

from conftest import unique
from fake_anthropic import mount_remote

FAMILIES = ("anthropic", "openai", "azure", "vertex")

RESULTS_PATH = {
    "anthropic": r"/results$",
    "openai": r"^/v1/files/[^/]+/content$",
    "azure": r"^/openai/files/[^/]+/content$",
    "vertex": r"predictions[^/]*\.jsonl$",
}


def vm_rss_kb(pid):
    """The daemon's resident set (VmRSS of /proc/PID/status), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Family:
    def __init__(self, name, srv, mount, remote):
        self.name = name
        self.srv = srv
        self.m = mount
        self.remote = remote
        self.results_path = RESULTS_PATH[name]

    def line(self, cid, text="hello"):
        if self.name == "anthropic":
            return json.dumps({"custom_id": cid, "params": {
                "model": "claude-test", "max_tokens": 16,
                "messages": [{"role": "user", "content": text}]}})
        if self.name == "vertex":
            return json.dumps({"custom_id": cid, "request": {
                "messages": [{"role": "user", "content": text}],
                "anthropic_version": "vertex-2023-10-16", "max_tokens": 16}})
        model = "gpt-4o-mini" if self.name == "openai" else "gpt-4o-mini-batch"
        url = "/v1/chat/completions" if self.name == "openai" else "/chat/completions"
        return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": {
            "model": model, "messages": [{"role": "user", "content": text}]}})

    def submit(self, ids, name=None):
        d = os.path.join(self.m.path, self.remote, name or unique("h"))
        os.mkdir(d)
        with open(os.path.join(d, "requests.jsonl"), "w") as f:
            f.write("".join(self.line(c, f"text {c}") + "\n" for c in ids))
        return d

    def batches_created(self):
        """How many batches the fake holds (made by anyone)."""
        with self.srv.lock:
            if self.name == "anthropic":
                return len(self.srv.batches)
            if self.name == "vertex":
                return len(self.srv.jobs)
            return len(self.srv.batches)


def remote_section(name, srv, **keys):
    """The config section of a remote on fake srv (keys: more of its keys)."""
    # min_poll_interval 0: the fakes answer at once, Azure's 60 s guidance is not for them
    common = {"poll_interval": "0.2", "list_interval": "0.5", "min_poll_interval": "0"}
    if name == "anthropic":
        s = {"provider": "anthropic", "base_url": srv.url, "api_key_env": "BFS_TEST_KEY"}
    elif name == "openai":
        s = {"provider": "openai", "base_url": srv.base_url, "api_key_env": "BFS_TEST_KEY"}
    elif name == "azure":
        # Azure's poll guidance (60 s, provider_ops.min_poll_interval) lowered as test_85 does.
        s = {"provider": "azure", "endpoint": srv.url, "api_key_env": "BFS_TEST_KEY",
             "min_poll_interval": "0"}
    else:
        s = {"provider": "vertex", "project": "p", "location": "us-east5", "bucket": "b",
             "model": "claude-3-5-haiku@20241022", "aiplatform_url": srv.url,
             "storage_url": srv.url, "access_token_command": "echo " + VERTEX_TOKEN}
    s.update(common)
    s.update({k: str(v) for k, v in keys.items()})
    return s


VERTEX_TOKEN = "ya29.hostile-test-token"
KEYS = {"anthropic": "sk-ant-api03-fake-test-key", "openai": "sk-test-openai",
        "azure": "azure-test-key"}


def family(name, fake_server, mount_factory, fake_config=None, mount_name=None, **keys):
    """A fake of family name and a mount with one remote 'h' on it."""
    srv = fake_server(name, **(fake_config or {}))
    if name == "vertex":
        srv.add_token(VERTEX_TOKEN)
    # ASan keeps freed memory in a quarantine (256 MiB by default) that would count in VmRSS:
    # a small one measures the daemon's own use.
    env = {"BFS_TEST_KEY": KEYS.get(name, ""),
           "ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                "quarantine_size_mb=1") if x)}
    m = mount_factory({"h": remote_section(name, srv, **keys)}, env=env,
                      name=mount_name or unique("mnt"))
    return Family(name, srv, m, "h")


__all__ = ["FAMILIES", "Family", "family", "remote_section", "vm_rss_kb", "mount_remote"]
