"""The floors of the table workloads (see ``bench/tables_quick.py`` for the functions).

- ``dict``: ``table_dirty_write`` as plain ``d[key] = record`` writes — the physical
  floor of a table held in memory.
- ``sqlite``: ``table_disc_tx`` as raw sqlite (WAL, ``synchronous=FULL``) committing 100
  rows per fsync from one connection — what group commit can reach on this disk.

The gevent floor of the ram workloads (one call per write to a greenlet that owns the
dict) is in ``bench/floor_gevent.py``.
"""

from __future__ import annotations

from bench._measure import Workload
from bench.tables_quick import dict_write, sqlite_group

DICT_WORKLOADS: dict[str, Workload] = {"table_dirty_write": dict_write}
SQLITE_WORKLOADS: dict[str, Workload] = {"table_disc_tx": sqlite_group}
