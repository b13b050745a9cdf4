"""Child OS process of the crash-safety test (tests/test_tables_crash.py).

    python tests/tables_crash_child.py DIRECTORY FIRST_ID WRITERS

Starts a node, opens the disc tables in DIRECTORY (creating them the first time),
prints ``ready``, then runs WRITERS processes that commit transactions forever. Each
transaction writes id ``i`` to table ``a`` and two records ``(i, "x")``, ``(i, "y")``
to the bag ``b``; after ``transaction`` returns (the commit is fsync'd), the writer
prints ``ack <i>``. The parent kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys

import otp

otp.patch()

from otp import tables  # noqa: E402 - after monkey-patching
from otp.process import receive, spawn_link  # noqa: E402


def _write(i: int, w: int) -> None:
    tables.write("a", (i, w))
    tables.write("b", (i, "x"))
    tables.write("b", (i, "y"))


def writer(first: int, w: int, step: int) -> None:
    out = sys.stdout
    i = first + w
    while True:
        tables.transaction(_write, i, w)
        out.write(f"ack {i}\n")
        out.flush()
        i += step


def main(directory: str, first: int, writers: int) -> None:
    tables.start(directory)
    if "a" not in tables.table_names():
        tables.create_table("a", attributes=("id", "w"), copies="disc")
        tables.create_table("b", attributes=("id", "tag"), type="bag", copies="disc")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for w in range(writers):
        spawn_link(writer, first, w, writers)
    receive()


if __name__ == "__main__":
    otp.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
