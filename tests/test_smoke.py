from otp.process import Down, receive, spawn_monitor
from otp.testing import assert_receive


def test_process_that_returns_ends_with_normal(node):
    pid, ref = spawn_monitor(lambda: None)
    assert assert_receive(Down) == Down(ref, pid, "normal")
    assert receive(timeout=0, default=None) is None
