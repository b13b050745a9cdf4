"""A WhatsApp-style messaging server written only against otp's public API.

Each user is a supervised process that owns its inbox; messages are stored durably,
forwarded actor to actor with retry and back-off until acknowledged, streamed to the
device when it is connected, and wiped from the server once the device accepted them.

This package is the ``chat`` application: ``APP`` is its descriptor, its settings are
``chat.config.ChatConfig`` (the ``chat:`` section of ``config/*.yaml``)::

    import otp.config
    from otp import application
    application.configure(otp.config.load("config/dev.yaml"))
    application.start("chat", type="permanent")

or ``python -m chat --config config/dev.yaml`` (what ``make run`` does). Modules:
``protocol`` (wire codec), ``client`` / ``cli`` (devices), ``connection`` (listener
and connection processes), ``users`` (user processes, the message path),
``registration``, ``store``, ``gateways`` (SMS, push), ``app`` (supervision tree).
"""

from __future__ import annotations

from typing import Any

from chat.config import ChatConfig
from otp import application
from otp.application import Application, AppSpec

__all__ = ["APP", "ChatApplication"]


class ChatApplication(Application):
    """Starts ``chat.app.ChatSup`` with the application's env as a ``ChatConfig``."""

    def start(self, start_type: Any, args: Any) -> Any:
        from chat import app

        cfg = ChatConfig.model_validate(application.get_all_env("chat"))
        return app.start(cfg)

    def stop(self, state: Any) -> None:
        pass


APP = AppSpec(
    "chat", "0.1.0", ChatApplication, schema=ChatConfig,
    registered=("chat.sup", "chat.store", "chat.registration", "chat.users", "chat.conns",
                "chat.listener"),
    description="WhatsApp-style 1:1 messaging server",
)
