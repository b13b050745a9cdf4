"""The ``otp_tables`` application: its spec and callback (start the supervision tree).

``application.start(otp.tables.APP)`` (or ``otp.tables.start(directory)``, which also
sets the ``directory`` env and waits for the tables to load) starts ``otp_tables_sup``
with the disc owner under it. Env: ``directory`` (default ``$OTP_TABLES_DIR`` or
``./otp_tables.<node name>``).

Replicated tables (docs/tables.md): with ``etcd_endpoints`` set (a list of etcd client
URLs, several for failover), the application also joins the replicated tables kept in
that etcd (``start_replication``: disc copies under ``directory``/replicated, catch-up
before ``start`` returns). Further keys: ``etcd_prefix`` (the key prefix: one cluster
of nodes per prefix; default ``otpy``), ``etcd_timeout`` (seconds a call to etcd, and
so a commit, may take; default 5), ``etcd_ca_file``, ``etcd_cert_file``,
``etcd_key_file`` (TLS, with ``https://`` endpoints), ``etcd_user``,
``etcd_password`` (etcd authentication). In a release config::

    otp_tables:
      directory: var/tables
      etcd_endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379, http://10.0.0.3:2379]
      etcd_prefix: chat
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
        endpoints = application.get_env(APP_NAME, "etcd_endpoints")
        if endpoints and reg.repl is None:
            from otp.tables._repl_api import start_replication

            env = {k: application.get_env(APP_NAME, f"etcd_{k}")
                   for k in ("ca_file", "cert_file", "key_file", "user", "password")}
            start_replication(
                endpoints=list(endpoints),
                prefix=application.get_env(APP_NAME, "etcd_prefix") or "otpy",
                timeout=float(application.get_env(APP_NAME, "etcd_timeout") or 5.0),
                directory=reg.disc.directory,
                **env,
            )
        return pid

    def stop(self, state: Any) -> None:
        reg = registry()
        if reg.repl is not None:
            from otp.tables._repl_api import stop_replication

            stop_replication()
        reg.disc = None


APP = AppSpec(
    APP_NAME,
    "0.1.0",
    TablesApp,
    registered=(SUP_NAME, OWNER_NAME),
    env={"directory": None, "etcd_endpoints": None, "etcd_prefix": "otpy",
         "etcd_timeout": 5.0, "etcd_ca_file": None, "etcd_cert_file": None,
         "etcd_key_file": None, "etcd_user": None, "etcd_password": None},
    description="Mnesia-like tables: ram and disc copies, transactions",
)
