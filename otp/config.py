"""Application configuration: YAML files (OTP's ``sys.config``), validated per application.

A config file maps application name -> key -> value::

    # config/chat.dev.yaml
    chat:
      port: 5222
      sms_gateway: console
    otp_logger:
      level: INFO

Each application declares what it accepts as a pydantic model (``AppSpec(schema=...)``,
see ``otp.application``); its env is resolved from four layers, later ones winning
(docs/semantics.md A2):

1. the application's defaults (the model's field defaults, then ``AppSpec(env=...)``);
2. the config files, in the order given (a directory means its ``*.yaml``/``*.yml``
   files in name order);
3. the environment: ``OTP_<APP>__<KEY>`` (upper case, the app name with every
   character that is not a letter or digit turned into ``_``, then *two* underscores,
   then the key): ``OTP_CHAT__PORT=5223``, ``OTP_JOB_QUEUE__MAX_RETRIES=5``; more
   ``__`` reach into nested mappings: ``OTP_CHAT__LISTEN__PORT=5223``. The value is
   the raw string, converted to the key's type by pydantic (``5223``, ``true``,
   ``1.5``); a value that only makes sense as structured data is read as YAML
   (``[a, b]``, ``{k: v}``). Without a schema, values are read as YAML scalars;
4. ``otp.application.set_env`` at run time (replaces the whole value of the key).

Where two layers both give a mapping for a key, they merge key by key (deeply, as
Elixir's config does); any other value replaces the lower one.

Example::

    import pathlib, tempfile
    from pydantic import BaseModel
    from otp import config

    class ChatEnv(BaseModel):
        port: int = 5222
        sms_gateway: str = "console"

    path = pathlib.Path(tempfile.mkdtemp()) / "chat.dev.yaml"
    path.write_text("chat: {port: 5223, sms_gateway: log}")
    cfg = config.load(path)                        # parse + check the shape (files, dirs)
    env = config.resolve("chat", schema=ChatEnv, config=cfg, environ={})
    assert env == {"port": 5223, "sms_gateway": "log"}
    env = config.resolve("chat", schema=ChatEnv, config=cfg, environ={"OTP_CHAT__PORT": "6000"})
    assert env["port"] == 6000                     # the environment wins over the files

In an application, ``otp.application.configure(config.load("config/"))`` does the loading
and ``start`` the resolving.

Failure semantics: every problem raises ``otp.errors.ConfigError`` whose message names
the file (and the line, from the YAML marks), the application and the key, what was
expected and what was given -- all problems of one application at once, one per line::

    config/chat.dev.yaml, line 2: app 'chat', key 'port': expected int (a valid
    integer, unable to parse string as an integer), got 'fast'

(a nested value is named by its path, ``key 'listen.port'``, with its own line).

Unknown keys are errors (a typo must not silently fall back to a default): with a
schema, the model's fields are the known keys; without one, the keys of the
application's defaults. Only ``yaml.safe_load``-level constructs are accepted (no
Python object tags). Sections for applications that are never loaded are ignored, as
in OTP.

When not to use: for secrets (reference a file path or an environment variable from
the config instead of writing the secret into it), and for values that change while
running (that is state: keep it in a process).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pydantic
import yaml

from otp.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "Config",
    "ConfigFile",
    "Setting",
    "env_var_name",
    "load",
    "load_file",
    "resolve",
    "validate_value",
]

#: Environment variables ``OTP_<APP>__<KEY>`` override config files.
ENV_PREFIX = "OTP_"

_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Setting:
    """One configured value and where it came from (``source`` is shown in errors:
    ``"config/dev.yaml, line 4"``, ``"environment variable OTP_CHAT__PORT"``...).
    ``paths`` gives the source of nested values of a mapping, by key path."""

    value: Any
    source: str
    paths: Mapping[tuple[Any, ...], str] = field(default_factory=lambda: MappingProxyType({}))

    def source_of(self, path: tuple[Any, ...]) -> str:
        """The source of the value at ``path`` inside this one (the deepest known)."""
        for n in range(len(path), 0, -1):
            where = self.paths.get(tuple(path[:n]))
            if where is not None:
                return where
        return self.source


def _merge(old: Setting | None, new: Setting) -> Setting:
    """Mappings merge key by key (deeply, later wins); anything else replaces."""
    if old is None or not (isinstance(old.value, dict) and isinstance(new.value, dict)):
        return new
    return Setting(
        _deep_merge(old.value, new.value), new.source,
        MappingProxyType({**old.paths, **new.paths}),
    )  # fmt: skip


def _deep_merge(a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(
            v, dict) else v  # fmt: skip
    return out


@dataclass(frozen=True)
class ConfigFile:
    """One parsed config file: ``apps[app][key]`` is a ``Setting``."""

    path: str
    apps: Mapping[str, Mapping[str, Setting]]


@dataclass(frozen=True)
class Config:
    """Config files in precedence order (later files win)."""

    files: tuple[ConfigFile, ...] = ()

    def settings(self, app: str) -> dict[str, Setting]:
        """The merged settings of ``app`` over all files: later files win; mappings
        merge key by key."""
        merged: dict[str, Setting] = {}
        for f in self.files:
            for key, setting in f.apps.get(app, {}).items():
                merged[key] = _merge(merged.get(key), setting)
        return merged

    def apps(self) -> list[str]:
        """Every application named in some file."""
        seen: dict[str, None] = {}
        for f in self.files:
            seen.update(dict.fromkeys(f.apps))
        return list(seen)


# ------------------------------------------------------------------------- loading


def load(*paths: str | os.PathLike[str]) -> Config:
    """Load config files in precedence order; a directory stands for its ``*.yaml`` and
    ``*.yml`` files sorted by name. ``ConfigError`` if a path does not exist, a file is
    not valid YAML, or its shape is not ``app -> key -> value``."""
    files: list[ConfigFile] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            names = sorted(
                [*path.glob("*.yaml"), *path.glob("*.yml")], key=lambda x: x.name
            )
            files.extend(load_file(f) for f in names)
        elif path.exists():
            files.append(load_file(path))
        else:
            raise ConfigError(f"{path}: config file not found (expected a YAML file or a "
                              f"directory of them)")
    return Config(tuple(files))


def load_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Parse one YAML config file (safe loading only) and check its shape."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{name}: cannot read config file: {e.strerror or e}") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{_yaml_where(name, e)}: malformed YAML: {_yaml_problem(e)}") from e
    if root is None or data is None:
        return ConfigFile(name, MappingProxyType({}))
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise ConfigError(
            f"{name}, line {root.start_mark.line + 1}: expected a mapping of application "
            f"name -> settings at the top level, got {_kind(data)}"
        )
    apps: dict[str, Mapping[str, Setting]] = {}
    for app_node, section_node in root.value:
        app = app_node.value
        line = app_node.start_mark.line + 1
        if app_node.tag != _STR_TAG:
            raise ConfigError(
                f"{name}, line {line}: expected an application name (a string) as a "
                f"top-level key, got {_data_key(app_node)}"
            )
        if app in apps:
            raise ConfigError(f"{name}, line {line}: application {app!r} appears twice")
        section = data[app]
        if section is None:
            apps[app] = MappingProxyType({})
            continue
        if not isinstance(section_node, yaml.MappingNode) or not isinstance(section, dict):
            raise ConfigError(
                f"{name}, line {line}: app {app!r}: expected a mapping of key -> value, "
                f"got {_kind(section)}"
            )
        settings: dict[str, Setting] = {}
        for key_node, value_node in section_node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag != _STR_TAG:
                raise ConfigError(
                    f"{name}, line {kline}: app {app!r}: expected a key name (a string), "
                    f"got {_data_key(key_node)}"
                )
            key = key_node.value
            if key in settings:
                raise ConfigError(f"{name}, line {kline}: app {app!r}, key {key!r} appears "
                                  f"twice")
            paths: dict[tuple[Any, ...], str] = {}
            _nested_lines(name, value_node, (), paths)
            settings[key] = Setting(section[key], f"{name}, line {kline}",
                                    MappingProxyType(paths))  # fmt: skip
        apps[app] = MappingProxyType(settings)
    return ConfigFile(name, MappingProxyType(apps))


def _nested_lines(
    name: str, node: Any, path: tuple[Any, ...], out: dict[tuple[Any, ...], str]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            sub = (*path, k.value)
            out[sub] = f"{name}, line {k.start_mark.line + 1}"
            _nested_lines(name, v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            sub = (*path, i)
            out[sub] = f"{name}, line {v.start_mark.line + 1}"
            _nested_lines(name, v, sub, out)


def _data_key(node: Any) -> str:
    return f"{node.value!r} ({node.tag.rsplit(':', 1)[-1]})"


def _yaml_where(name: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is None:
        return name
    return f"{name}, line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(e: yaml.YAMLError) -> str:
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    text = "; ".join(p for p in parts if p)
    return text or str(e).splitlines()[0]


def _kind(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{value!r} ({type(value).__name__})"


# ------------------------------------------------------------------------- resolving


def env_var_name(app: str, key: str) -> str:
    """The environment variable that overrides ``app``'s ``key``:
    ``env_var_name("job_queue", "max_retries") == "OTP_JOB_QUEUE__MAX_RETRIES"``."""
    return f"{ENV_PREFIX}{_env_part(app)}__{_env_part(key)}"


def _env_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _env_settings(
    app: str, schema: type[pydantic.BaseModel] | None, known: Iterable[str],
    environ: Mapping[str, str],
) -> tuple[dict[str, Setting], list[str]]:  # fmt: skip
    prefix = f"{ENV_PREFIX}{_env_part(app)}__"
    by_var = {_env_part(k): k for k in known}
    found: dict[str, Setting] = {}
    errors: list[str] = []
    for var in sorted(environ):
        if not var.startswith(prefix):
            continue
        first, *nested = var[len(prefix):].split("__")
        key = by_var.get(first)
        where = f"environment variable {var}"
        if key is None:
            errors.append(
                f"{where}: app {app!r} has no key {first.lower()!r} "
                f"(known keys: {', '.join(sorted(by_var.values())) or 'none'})"
            )
            continue
        raw = environ[var]
        if not nested:
            annotation = schema.model_fields[key].annotation if schema is not None else None
            found[key] = Setting(_from_env_string(raw, annotation, schema is not None), where)
            continue
        # OTP_CHAT__LISTEN__PORT=5223 sets chat's listen.port, keeping listen's other keys.
        path = tuple(p.lower() for p in nested)
        leaf: Any = _from_env_string(raw, None, True) if raw[:1] in "[{" else raw
        for part in reversed(path):
            leaf = {part: leaf}
        found[key] = _merge(found.get(key), Setting(leaf, where, MappingProxyType({path: where})))
    return found, errors


def _from_env_string(raw: str, annotation: Any, typed: bool) -> Any:
    """Keep the raw string when the key's type accepts it (pydantic converts "5" to 5);
    otherwise read it as YAML (lists, mappings). Untyped values are read as YAML."""
    if typed and annotation is not None:
        try:
            pydantic.TypeAdapter(annotation).validate_python(raw)
            return raw
        except Exception:  # not valid as a string, or not adaptable alone: try YAML
            pass
    elif typed:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _annotation_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The declared type at ``loc`` inside a pydantic model, or None if unknown."""
    annotation: Any = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        annotation = model = info.annotation
    return annotation


def _describe_type(annotation: Any) -> str:
    if annotation is None:
        return "a value"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _format_errors(
    app: str,
    schema: type[pydantic.BaseModel],
    err: pydantic.ValidationError,
    settings: Mapping[str, Setting],
) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = e.get("loc", ())
        key = str(loc[0]) if loc else "?"
        path = ".".join(str(x) for x in loc) if loc else key
        setting = settings.get(key)
        where = setting.source_of(tuple(loc[1:])) if setting is not None else (
            f"defaults of app {app!r}")  # fmt: skip
        annotation = _annotation_at(schema, tuple(loc))
        typ = _describe_type(annotation)
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "missing":
            lines.append(
                f"app {app!r}, key {path!r}: required ({typ}), but not set in the defaults, "
                f"the config files or the environment (set it, or "
                f"{env_var_name(app, key)})"
            )
            continue
        msg = msg.replace("Input should be ", "").replace("Value error, ", "")
        expected = f"{typ} ({msg})" if annotation is not None else msg
        lines.append(
            f"{where}: app {app!r}, key {path!r}: expected {expected}, got {e.get('input')!r}"
        )
    return lines


def resolve(
    app: str,
    *,
    schema: type[pydantic.BaseModel] | None = None,
    defaults: Mapping[str, Any] | None = None,
    config: Config | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The validated env of ``app``: ``defaults`` < ``config`` files < ``environ``
    (``os.environ`` if None) < ``overrides`` (values from ``set_env``).

    With a ``schema`` (a pydantic model) every key the model declares is in the result,
    converted to its declared type; without one, the merged values as they are.
    ``ConfigError`` lists every unknown key and every invalid value of ``app``.
    """
    defaults = dict(defaults or {})
    environ = os.environ if environ is None else environ
    known: list[str] = list(schema.model_fields) if schema is not None else list(defaults)
    settings: dict[str, Setting] = {
        k: Setting(v, f"defaults of app {app!r}") for k, v in defaults.items()
    }
    errors: list[str] = []
    file_settings = (config or Config()).settings(app)
    for key, s in file_settings.items():
        if key not in known:
            errors.append(_unknown(app, key, s.source, known))
    env_settings, env_errors = _env_settings(app, schema, known, environ)
    errors += env_errors
    for layer in (file_settings, env_settings):
        for key, setting in layer.items():
            settings[key] = _merge(settings.get(key), setting)
    for key, value in (overrides or {}).items():
        if schema is not None and key not in known:
            errors.append(_unknown(app, key, "set_env", known))
        settings[key] = Setting(value, "set_env")  # set_env replaces the whole value
    if schema is None:
        if errors:
            raise ConfigError(_joined(app, errors))
        return {k: s.value for k, s in settings.items()}
    values = {key: s.value for key, s in settings.items() if key in known}
    try:
        model = schema.model_validate(values)
    except pydantic.ValidationError as e:
        errors += _format_errors(app, schema, e, settings)
        raise ConfigError(_joined(app, errors)) from None
    if errors:
        raise ConfigError(_joined(app, errors))
    return {k: getattr(model, k) for k in schema.model_fields}


def validate_value(
    app: str, schema: type[pydantic.BaseModel] | None, env: Mapping[str, Any], key: str,
    value: Any,
) -> Any:
    """Check one ``set_env(app, key, value)`` against ``app``'s schema (with the rest of
    its current ``env``); returns the converted value. No schema: ``value`` as is."""
    if schema is None:
        return value
    if key not in schema.model_fields:
        raise ConfigError(_joined(app, [_unknown(app, key, "set_env", list(schema.model_fields))]))
    values = {k: v for k, v in env.items() if k in schema.model_fields}
    values[key] = value
    try:
        model = schema.model_validate(values)
    except pydantic.ValidationError as e:
        raise ConfigError(
            _joined(app, _format_errors(app, schema, e, {key: Setting(value, "set_env")}))
        ) from None
    return getattr(model, key)


def _unknown(app: str, key: str, where: str, known: list[str]) -> str:
    return (
        f"{where}: app {app!r} has no key {key!r} "
        f"(known keys: {', '.join(sorted(known)) or 'none'}; declare it in the app's schema)"
    )


def _joined(app: str, errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return f"invalid configuration for app {app!r}:\n" + "\n".join(f"  {e}" for e in errors)

