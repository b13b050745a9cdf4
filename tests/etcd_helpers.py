"""The tests' handle on a real etcd: the cluster kit, and a skip saying why when the
``etcd`` binary is missing."""

from __future__ import annotations

import pytest

from otp.tables.etcd_cluster import ETCD, EtcdCluster

__all__ = ["ETCD", "EtcdCluster", "need_etcd"]


def need_etcd() -> str:
    if ETCD is None:
        pytest.skip("etcd is not installed: apt-get install -y etcd-server")
    return ETCD
