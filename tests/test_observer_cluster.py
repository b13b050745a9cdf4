"""top and sar across a cluster (otp.rpc): every connected node's summary and rows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otp.testing_dist import Cluster, OtpyNode

SETUP = (
    "from otp import application, ops, rpc, stats\n"
    "application.ensure_all_started('otp_ops')\n"
)


@pytest.fixture
def ab(tmp_path) -> Iterator[tuple[OtpyNode, OtpyNode]]:
    with Cluster(tmp_path / "logs") as c:
        a, b = c.otpy("a"), c.otpy("b")
        for n in (a, b):
            n.exec(SETUP)
        yield a, b


def test_cluster_top_merges_every_nodes_rows_and_names_them(ab):
    a, b = ab
    b.exec(
        "def _parked():\n    receive('never')\n"
        "P = spawn(_parked)\nregister('backlog', P)\n"
        "for i in range(30):\n    send(P, i)\n"
        "stats.sample_now()\n"
    )
    assert a.eval("rpc.call(B, 'os:getpid')", B=b.name) == b.child.os_pid  # connected
    view = a.eval("ops.cluster_top('queue', 5)")
    assert view["bad_nodes"] == []
    assert sorted(s["node"] for s in view["nodes"]) == [a.name, b.name]
    first = view["rows"][0]
    assert (first["node"], first["name"], first["queue"]) == (b.name, "backlog", 30)
    sar_views = a.eval("ops.cluster_sar()")
    assert sorted(v["node"] for v in sar_views) == [a.name, b.name]


def test_the_text_view_of_a_cluster_has_a_line_per_node_and_node_named_rows():
    from otp.top import render_text

    summary = {"node": "a@h", "processes": 3, "queued": 0, "alarms": [],
               "nodes": [{"node": "a@h", "processes": 3, "queued": 0, "alarms": []},
                         {"node": "b@h", "processes": 4, "queued": 30, "alarms": [
                             {"id": "node_queued", "description": {
                                 "node": "b@h", "what": "node_queued", "value": 30,
                                 "threshold": 20}}]}]}
    rows = [{"node": "b@h", "pid": "<0.9.0>", "name": "backlog", "queue": 30,
             "in_now": 0.0, "out_now": 0.0, "drain_time": None, "memory": 100}]
    text = render_text(summary, rows, "queue").splitlines()
    assert text[0].startswith("node a@h") and text[1].startswith("node b@h")
    assert text[2] == "ALARM b@h node_queued: 30 >= 20"
    assert any(line.startswith("b@h <0.9.0>") and "never" in line for line in text)
