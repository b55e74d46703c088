"""Helpers for tests that drive a mount the way a user's tools would."""
import json
import os

from mount import wait_for


def read_status(batch_dir):
    with open(os.path.join(batch_dir, "status")) as f:
        return json.loads(f.read())


def wait_state(batch_dir, states, timeout=20):
    """Wait until status.state is one of states; return the status."""
    if isinstance(states, str):
        states = (states,)
    last = {}

    def check():
        last["s"] = read_status(batch_dir)
        return last["s"] if last["s"]["state"] in states else None
    try:
        return wait_for(check, timeout, interval=0.05, what=f"state in {states}")
    except AssertionError:
        raise AssertionError(f"state never reached {states}; last status: {last.get('s')}")


def wait_results(batch_dir, timeout=30):
    """Wait until results are ready (results/ visible); return the status."""
    def check():
        s = read_status(batch_dir)
        return s if s["results"] == "ready" and os.path.isdir(os.path.join(batch_dir, "results")) \
            else None
    return wait_for(check, timeout, interval=0.05, what="results ready")


def anthropic_line(custom_id, text="hello", model="claude-test", max_tokens=16):
    return json.dumps({"custom_id": custom_id, "params": {
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}]}}, separators=(",", ":"))


def anthropic_requests(n, prefix="req", model="claude-test"):
    return "".join(anthropic_line(f"{prefix}-{i}", f"text {i}", model) + "\n" for i in range(n))
