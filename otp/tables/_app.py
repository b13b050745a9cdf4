"""The ``otp_tables`` application: its spec and callback (start the supervision tree).

``application.start(otp.tables.APP)`` (or ``otp.tables.start(directory)``, which also
sets the ``directory`` env and waits for the tables to load) starts ``otp_tables_sup``
with the disc owner under it. Env: ``directory`` (default ``$OTP_TABLES_DIR`` or
``./otp_tables.<node name>``).
"""

from __future__ import annotations

import os
from typing import Any

from otp import application
from otp.application import Application, AppSpec
from otp.lowlevel import current_node
from otp.process import Pid
from otp.tables._disc_owner import OWNER_NAME, SUP_NAME, DiscState, start_sup
from otp.tables._registry import registry

APP_NAME = "otp_tables"


def default_directory() -> str:
    return os.environ.get("OTP_TABLES_DIR") or f"otp_tables.{current_node().name}"


class TablesApp(Application):
    """Starts the disc side of the tables: ``otp_tables_sup`` and the disc owner."""

    def start(self, start_type: str, args: Any) -> Pid:
        reg = registry()
        if reg.disc is None or reg.disc.stopping:
            directory = application.get_env(APP_NAME, "directory") or default_directory()
            reg.disc = DiscState(os.fspath(directory))
        try:
            pid = start_sup(reg)
        except BaseException:
            reg.disc = None
            raise
        assert pid is not None
        reg.disc.sup = pid
        return pid

    def stop(self, state: Any) -> None:
        registry().disc = None


APP = AppSpec(
    APP_NAME,
    "0.1.0",
    TablesApp,
    registered=(SUP_NAME, OWNER_NAME),
    env={"directory": None},
    description="Mnesia-like tables: ram and disc copies, transactions",
)
