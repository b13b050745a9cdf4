"""The chat application's configuration schema, loaded from YAML (``config/*.yaml``).

Example::

    from chat.config import load_config
    cfg = load_config("config/dev.yaml")          # ChatConfig, validated
    cfg.listen.port, cfg.sms.adapter

A file may hold the chat settings at its top level or under a ``chat:`` key (the
release's config file keys settings by application name). Unknown keys are errors, so a
typo does not silently fall back to a default.

Failure semantics: ``load_config`` raises ``ConfigError`` naming the key, what was
expected and what was given. ``check_production`` refuses a production config that would
leak PINs to a log (the ``console`` SMS gateway) or enable the admin path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from otp.errors import ConfigError

__all__ = ["ChatConfig", "MediaConfig", "check_production", "load_config", "parse_config"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Model):
    certfile: str
    keyfile: str


class ListenConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(5280, ge=0, le=65535)
    tls: TLSConfig | None = None
    backlog: int = Field(1024, ge=1)


class LimitsConfig(_Model):
    max_frame: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    max_body: int = Field(16 * 1024, ge=1)
    idle_timeout: float = Field(60.0, gt=0)
    max_bad_frames: int = Field(10, ge=1)
    window: int = Field(256, ge=1)
    #: SO_SNDBUF for device sockets (None: the OS default); bounds what the kernel
    #: buffers for a client that does not read.
    send_buffer: int | None = Field(None, ge=1024)
    presence_per_hour: int = Field(2000, ge=1)
    contacts_per_hour: int = Field(5000, ge=1)
    reads_per_hour: int = Field(20000, ge=1)  # message ids in read requests


class RegistrationConfig(_Model):
    code_ttl: float = Field(600.0, gt=0)
    max_attempts: int = Field(4, ge=1)
    #: at most ``rate_count`` code requests per number within ``rate_period`` seconds
    rate_count: int = Field(3, ge=1)
    rate_period: float = Field(600.0, gt=0)
    #: and at most ``source_rate_count`` from one source address within that period
    source_rate_count: int = Field(20, ge=1)
    #: login failures: delay = base * 2**(failures-1), capped
    login_backoff_base: float = Field(0.25, ge=0)
    login_backoff_max: float = Field(8.0, ge=0)


class GatewayConfig(_Model):
    adapter: str = "console"
    url: str | None = None
    timeout: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class UsersConfig(_Model):
    #: a user process with no device and nothing to forward stops after this long
    idle_stop: float = Field(30.0, gt=0)
    retry_initial: float = Field(0.2, gt=0)
    retry_max: float = Field(10.0, gt=0)


class MediaConfig(_Model):
    """The HTTP media endpoint (docs/protocol.md, "Media"): uploads beside the chat
    connection. It speaks TLS when the chat listener does (same certificate)."""

    host: str = "127.0.0.1"
    port: int = Field(5281, ge=0, le=65535)
    #: the base URL given to devices (e.g. behind a proxy); default http(s)://host:port
    public_url: str | None = None
    max_size: int = Field(100 * 1024 * 1024, ge=1)  # bytes of one upload
    max_uploads: int = Field(16, ge=1)  # uploads at once; more get 503 + Retry-After
    retry_after: float = Field(5.0, ge=0)  # the Retry-After of that 503, seconds
    upload_timeout: float = Field(300.0, gt=0)  # seconds an upload's body may take
    token_ttl: float = Field(3600.0, gt=0)  # seconds an upload/download token is valid
    retention: float = Field(30 * 86400.0, gt=0)  # a blob lives at most this long
    #: a blob no message names is deleted this long after its upload
    unreferenced_grace: float = Field(3600.0, gt=0)
    sweep_interval: float = Field(60.0, gt=0)  # seconds between sweeps for expired blobs
    thumbnail_max: int = Field(8192, ge=0)  # bytes of a decoded thumbnail


class ChatConfig(_Model):
    env: Literal["dev", "prod", "test"] = "dev"
    data_dir: str = "var/chat"
    listen: ListenConfig = ListenConfig()
    limits: LimitsConfig = LimitsConfig()
    registration: RegistrationConfig = RegistrationConfig()
    sms: GatewayConfig = GatewayConfig(adapter="console")
    push: GatewayConfig = GatewayConfig(adapter="log")
    users: UsersConfig = UsersConfig()
    #: the media endpoint; None (no ``media:`` section): media requests are unavailable
    media: MediaConfig | None = None
    admin_token: str | None = None
    #: sqlite synchronous mode for the message store: FULL (fsync each group commit)
    #: is the only safe choice in production; OFF is for throwaway test data.
    durability: Literal["full", "off"] = "full"
    #: the message store: "sqlite" (chat's own group-committed sqlite file in data_dir)
    #: or "tables" (otp.tables disc tables; the otp_tables application must run)
    storage: Literal["sqlite", "tables"] = "sqlite"
    #: sqlite only: run the store's SQL work and disk writes in an OS process of its
    #: own (``chat.store_child``), beside the node; false keeps them in the node
    #: (the SQL on the node's thread, the fsync in its thread pool)
    store_process: bool = True


def parse_config(data: Any, source: str = "<config>") -> ChatConfig:
    if data is None:
        data = {}
    if isinstance(data, dict) and set(data) == {"chat"}:
        data = data["chat"]
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of chat settings, got "
                          f"{type(data).__name__}")
    try:
        return ChatConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r:.60})"
            for err in e.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: str | Path, **overrides: Any) -> ChatConfig:
    """Read and validate a YAML file; ``overrides`` replace top-level keys."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if isinstance(data, dict) and "chat" in data:
        data = data["chat"]  # (other sections are other applications', e.g. node:)
    if overrides:
        data = dict(data or {})
        data.update(overrides)
    return parse_config(data, str(p))


def check_production(cfg: ChatConfig) -> None:
    """Refuse settings that are unsafe in production (``env: prod``)."""
    if cfg.env != "prod":
        return
    if cfg.sms.adapter == "console":
        raise ConfigError("sms.adapter: expected a real SMS gateway (http) in production, "
                          "got 'console' (it would write PINs to the log)")
    if cfg.admin_token:
        raise ConfigError("admin_token: expected unset in production (it enables "
                          "provisioning users without SMS), got a token")
    m = cfg.media
    if m is not None and m.public_url is None and m.host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"media.public_url: expected the URL devices reach the media "
                          f"endpoint at (media.host {m.host!r} listens on every address, "
                          f"so it names none), got none")
