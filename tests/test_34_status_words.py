"""Status errors say what failed once: no "cannot cancel batch 'b1': cannot cancel batch ..."."""
import os

import pytest

from conftest import unique
from bfs import anthropic_requests, read_status, wait_state
from fake_anthropic import mount_remote


def test_a_failed_cancel_says_cannot_cancel_once(fake_server, mount_factory):
    srv = fake_server("anthropic", processing_s=60)
    m = mount_remote(mount_factory, srv)
    m.expect_log(r"cannot cancel")
    d = os.path.join(m.path, "a", unique())
    os.mkdir(d)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.write(anthropic_requests(2))
    wait_state(d, "in_progress")
    srv.add_fault(method="POST", path=r"/cancel$", status=404, times=0)
    with pytest.raises(OSError):
        with open(os.path.join(d, "ctl"), "w") as f:
            f.write("cancel\n")
    msg = read_status(d)["error"]["message"]
    assert msg.count("cannot cancel") == 1, msg
    assert msg.startswith("cannot cancel batch 'msgbatch_"), msg
