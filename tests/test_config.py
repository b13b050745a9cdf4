"""otp.config: YAML config files, per-application schemas, environment overrides."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from otp import config
from otp.errors import ConfigError


class ChatEnv(BaseModel):
    port: int = 5222
    host: str = "localhost"
    gateways: list[str] = ["console"]
    debug: bool = False


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a2_env_precedence_defaults_then_files_in_order_then_environment(tmp_path):
    a = _write(tmp_path, "a.yaml", "chat:\n  port: 6000\n  host: a.example\n")
    b = _write(tmp_path, "b.yaml", "chat:\n  port: 7000\n")
    cfg = config.load(a, b)
    env = config.resolve("chat", schema=ChatEnv, config=cfg, environ={})
    assert env == {"port": 7000, "host": "a.example", "gateways": ["console"], "debug": False}
    env = config.resolve(
        "chat", schema=ChatEnv, config=cfg, environ={"OTP_CHAT__HOST": "env.example"}
    )
    assert env["host"] == "env.example" and env["port"] == 7000
    env = config.resolve(
        "chat",
        schema=ChatEnv,
        config=cfg,
        environ={"OTP_CHAT__HOST": "env.example"},
        overrides={"host": "runtime.example"},
    )
    assert env["host"] == "runtime.example"


def test_app_defaults_from_appspec_env_override_the_schema_defaults():
    env = config.resolve("chat", schema=ChatEnv, defaults={"port": 1}, environ={})
    assert env["port"] == 1


def test_a_directory_stands_for_its_yaml_files_in_name_order(tmp_path):
    _write(tmp_path, "20-prod.yaml", "chat:\n  port: 2\n")
    _write(tmp_path, "10-base.yml", "chat:\n  port: 1\n  debug: true\n")
    _write(tmp_path, "notes.txt", "not: yaml: at: all:")
    env = config.resolve("chat", schema=ChatEnv, config=config.load(tmp_path), environ={})
    assert (env["port"], env["debug"]) == (2, True)


def test_environment_values_are_converted_to_the_key_type():
    environ = {
        "OTP_CHAT__PORT": "6001",
        "OTP_CHAT__DEBUG": "true",
        "OTP_CHAT__GATEWAYS": "[sms, push]",
        "OTP_OTHER__PORT": "1",  # another app's variable: not ours
        "OTP_VERSION": "26",  # not of the OTP_<APP>__<KEY> form
    }
    env = config.resolve("chat", schema=ChatEnv, environ=environ)
    assert env["port"] == 6001 and env["debug"] is True and env["gateways"] == ["sms", "push"]


def test_env_var_name_documents_the_naming():
    assert config.env_var_name("job_queue", "max_retries") == "OTP_JOB_QUEUE__MAX_RETRIES"
    assert config.env_var_name("my-app", "port") == "OTP_MY_APP__PORT"


def test_without_a_schema_the_defaults_name_the_known_keys(tmp_path):
    env = config.resolve("plain", defaults={"size": 1}, environ={"OTP_PLAIN__SIZE": "3"})
    assert env == {"size": 3}
    f = _write(tmp_path, "p.yaml", "plain:\n  colour: red\n")
    with pytest.raises(ConfigError, match="line 2: app 'plain' has no key 'colour'"):
        config.resolve("plain", defaults={"size": 1}, config=config.load(f), environ={})
    # set_env (run time) may add keys to an app without a schema, as in OTP
    env = config.resolve("plain", defaults={"size": 1}, overrides={"colour": "red"}, environ={})
    assert env == {"size": 1, "colour": "red"}


def test_sections_of_other_apps_and_empty_files_are_fine(tmp_path):
    cfg = config.load(
        _write(tmp_path, "a.yaml", "other:\n  anything: 1\nchat:\n"),
        _write(tmp_path, "empty.yaml", ""),
    )
    assert config.resolve("chat", schema=ChatEnv, config=cfg, environ={})["port"] == 5222
    assert cfg.apps() == ["other", "chat"]


# ------------------------------------------------------------------------- errors


def test_config_error_wrong_type_names_file_line_app_key_expected_and_given(tmp_path):
    f = _write(tmp_path, "dev.yaml", "chat:\n  host: h\n  port: fast\n")
    with pytest.raises(ConfigError) as ei:
        config.resolve("chat", schema=ChatEnv, config=config.load(f), environ={})
    msg = str(ei.value)
    assert msg.startswith(f"{f}, line 3: app 'chat', key 'port': expected int")
    assert msg.endswith("got 'fast'")


def test_config_error_unknown_key_names_file_line_and_key(tmp_path):
    f = _write(tmp_path, "dev.yaml", "chat:\n  port: 1\n  prot: 2\n")
    with pytest.raises(ConfigError) as ei:
        config.resolve("chat", schema=ChatEnv, config=config.load(f), environ={})
    msg = str(ei.value)
    assert msg.startswith(f"{f}, line 3: app 'chat' has no key 'prot'")
    assert "known keys: debug, gateways, host, port" in msg


def test_config_error_malformed_yaml_names_file_and_line(tmp_path):
    f = _write(tmp_path, "bad.yaml", "chat:\n  port: 1\n  host: [unclosed\n")
    with pytest.raises(ConfigError) as ei:
        config.load(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}, line ")
    assert "malformed YAML" in msg


def test_config_error_unsafe_yaml_tags_are_refused(tmp_path):
    f = _write(tmp_path, "evil.yaml", "chat:\n  port: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match=r"evil.yaml, line 2, column 9: malformed YAML"):
        config.load(f)


def test_config_error_wrong_shape_names_file_line_and_app(tmp_path):
    with pytest.raises(ConfigError, match=r"top.yaml, line 1: expected a mapping of application"):
        config.load(_write(tmp_path, "top.yaml", "- chat\n"))
    with pytest.raises(ConfigError, match=r"sec.yaml, line 2: app 'chat': expected a mapping"):
        config.load(_write(tmp_path, "sec.yaml", "x: {}\nchat: 5\n"))
    with pytest.raises(ConfigError, match=r"key.yaml, line 2: app 'chat': expected a key name"):
        config.load(_write(tmp_path, "key.yaml", "chat:\n  1: x\n"))
    with pytest.raises(ConfigError, match=r"dup.yaml, line 3: app 'chat', key 'port' appears"):
        config.load(_write(tmp_path, "dup.yaml", "chat:\n  port: 1\n  port: 2\n"))


def test_config_error_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        config.load(tmp_path / "nope.yaml")


def test_config_error_bad_environment_variable_names_the_variable():
    with pytest.raises(ConfigError) as ei:
        config.resolve("chat", schema=ChatEnv, environ={"OTP_CHAT__PORT": "x"})
    assert str(ei.value).startswith(
        "environment variable OTP_CHAT__PORT: app 'chat', key 'port': expected int"
    )
    with pytest.raises(ConfigError, match="environment variable OTP_CHAT__PROT: app 'chat' "
                       "has no key 'prot'"):
        config.resolve("chat", schema=ChatEnv, environ={"OTP_CHAT__PROT": "1"})


def test_config_error_lists_every_problem_of_the_app_at_once(tmp_path):
    f = _write(tmp_path, "dev.yaml", "chat:\n  port: fast\n  debug: maybe\n  extra: 1\n")
    with pytest.raises(ConfigError) as ei:
        config.resolve("chat", schema=ChatEnv, config=config.load(f), environ={})
    lines = str(ei.value).splitlines()
    assert lines[0] == "invalid configuration for app 'chat':"
    assert any("line 4: app 'chat' has no key 'extra'" in ln for ln in lines)
    assert any("line 2: app 'chat', key 'port': expected int" in ln for ln in lines)
    assert any("line 3: app 'chat', key 'debug': expected bool" in ln for ln in lines)


def test_config_error_required_key_that_nobody_set():
    class Needs(BaseModel):
        secret_file: str

    with pytest.raises(ConfigError, match="app 'vault', key 'secret_file': required"):
        config.resolve("vault", schema=Needs, environ={})


def test_validate_value_checks_one_set_env_against_the_schema():
    env = config.resolve("chat", schema=ChatEnv, environ={})
    assert config.validate_value("chat", ChatEnv, env, "port", "80") == 80
    with pytest.raises(ConfigError, match="set_env: app 'chat', key 'port': expected int"):
        config.validate_value("chat", ChatEnv, env, "port", "eighty")
    with pytest.raises(ConfigError, match="set_env: app 'chat' has no key 'prot'"):
        config.validate_value("chat", ChatEnv, env, "prot", 1)


# ------------------------------------------------------------------------- nested settings


class Listen(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5280


class NestedEnv(BaseModel):
    listen: Listen = Listen()
    tags: list[str] = []


def test_nested_mappings_merge_key_by_key_across_files_and_environment(tmp_path):
    base = _write(tmp_path, "base.yaml", "chat:\n  listen:\n    host: 0.0.0.0\n    port: 1\n")
    prod = _write(tmp_path, "prod.yaml", "chat:\n  listen:\n    port: 2\n")
    cfg = config.load(base, prod)
    env = config.resolve("chat", schema=NestedEnv, config=cfg, environ={})
    assert env["listen"] == Listen(host="0.0.0.0", port=2)
    env = config.resolve(
        "chat", schema=NestedEnv, config=cfg, environ={"OTP_CHAT__LISTEN__PORT": "3"}
    )
    assert env["listen"] == Listen(host="0.0.0.0", port=3)


def test_config_error_in_a_nested_value_names_its_own_line(tmp_path):
    f = _write(tmp_path, "dev.yaml", "chat:\n  listen:\n    host: h\n    port: many\n")
    with pytest.raises(ConfigError) as ei:
        config.resolve("chat", schema=NestedEnv, config=config.load(f), environ={})
    assert str(ei.value).startswith(f"{f}, line 4: app 'chat', key 'listen.port': expected int")


def test_config_error_in_a_nested_environment_value_names_the_variable(tmp_path):
    f = _write(tmp_path, "dev.yaml", "chat:\n  listen:\n    host: h\n")
    with pytest.raises(ConfigError) as ei:
        config.resolve(
            "chat", schema=NestedEnv, config=config.load(f),
            environ={"OTP_CHAT__LISTEN__PORT": "many"},
        )
    assert str(ei.value).startswith(
        "environment variable OTP_CHAT__LISTEN__PORT: app 'chat', key 'listen.port': "
        "expected int"
    )


def test_the_module_example_runs():
    import textwrap

    doc = config.__doc__
    start = doc.index("    import pathlib, tempfile\n")
    end = doc.index("\n", doc.index('assert env["port"] == 6000')) + 1
    exec(compile(textwrap.dedent(doc[start:end]), "otp.config docstring", "exec"), {})
