"""Release 0.2.0 of the chat, generated from the repository's sources (0.1.0) for the
live-upgrade tests and ``bench/upgrade_bench.py``.

What 0.2.0 changes, and how it gets there live (its ``upgrades`` entry ``from: 0.1.0``):

- ``chat.users``: the user process's state (``_State``) has a new field,
  ``upgraded_from``; ``code_change`` fills it going up ("0.1.0") and rebuilds the
  0.1.0 shape going down. The user process answers a new call, ``("version",)``, with
  ``("0.2.0", upgraded_from)``. Its ``code_change`` up raises for user ``POISON``
  while a file ``POISON_FILE`` is in the release root (the node's directory): the
  upgrade test's failure midway.
- ``chat.protocol`` / ``chat.connection``: a new request type, ``version``
  (``{"t": "ok", "server": "chat/0.2.0", "user": "0.2.0", "migrated_from": ...}``),
  which 0.1.0 answers with ``unknown_type``. Connection processes (0.1.0's too) handle
  every frame through the *current* version of ``chat.connection`` (Erlang's fully
  qualified call), and the acceptor starts connections the same way, so loading
  ``chat.connection`` moves open connections to the new request handling.
  ``Listener.code_change`` (up) also replaces the 0.1.0 acceptor by one running this
  code.

Instructions, up::

    [load_module, chat.protocol]     # first: connection imports from it
    [update, chat.users]             # suspend, code_change, resume every user process
    [update, chat.listener]          # loads chat.connection; new acceptor
    [update, chat.conns]             # moves Conns off the old chat.connection

(``chat.conns`` must move too: the next load of ``chat.connection``, at the downgrade,
purges the version it runs, which kills it, and with it every connection linked to it.)
Down: the same steps with the connection first, so that no 0.2.0 connection sends
``("version",)`` to a user process already back on 0.1.0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.release_helpers import SPEC

SPEC_V1 = SPEC  # the repository's chat, as tests/release_helpers.py builds it

SPEC_V2 = """\
name: chat
version: 0.2.0
applications:
  - name: chat
    version: 0.2.0
    start_type: permanent
    path: chat_020/chat
config:
  - config/test.yaml
entry: chat.__main__:main
upgrades:
  - from: 0.1.0
    instructions:
      - [load_module, chat.protocol]
      - [update, chat.users]
      - [update, chat.listener]
      - [update, chat.conns]
    down:
      - [load_module, chat.protocol]
      - [update, chat.listener]
      - [update, chat.conns]
      - [update, chat.users]
"""


def config(admin_token: str = "t", idle_stop: float = 600.0, node_gc: bool = False) -> str:
    """Dev settings, any free port, data inside the release root, the admin path on
    (users are provisioned without SMS), user processes that stay up."""
    return f"""\
chat:
  env: dev
  data_dir: var/chat
  listen: {{host: 127.0.0.1, port: 0}}
  sms: {{adapter: console}}
  push: {{adapter: log}}
  durability: "off"
  admin_token: {admin_token}
  users: {{idle_stop: {idle_stop}, retry_initial: 0.05, retry_max: 0.5}}
  limits: {{max_bad_frames: 1000}}
""" + ("node:\n  gc: {thresholds: [10000, 4, 1000], freeze: true}\n" if node_gc else "")


def _patch(text: str, old: str, new: str, what: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"{what}: expected {old!r} once in the 0.1.0 source; the "
                             f"source changed: update tests/chat_v2_fixture.py")
    return text.replace(old, new)


USERS_TAIL = '''

# ---------------------------------------------------------------- 0.2.0: code_change

VSN = "0.2.0"
_NEW_FIELDS = ("upgraded_from",)
# the upgrade test's failing code_change: this user's, while the file is in the root
POISON = "+14155550666"
POISON_FILE = "poison-code-change"


def _code_change(self: User, old_vsn: Any, s: Any, extra: Any) -> Any:
    if s.phone == POISON and old_vsn == "0.1.0" and os.path.exists(POISON_FILE):
        raise ValueError(f"cannot migrate {s.phone} ({POISON_FILE} exists)")
    values = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
              if f.name not in _NEW_FIELDS}
    if isinstance(old_vsn, tuple) and old_vsn[:1] == ("down",):
        # back to the 0.1.0 shape: the fields it has, nothing else
        return _State_0_1_0(**values)
    return _State(**values, upgraded_from=old_vsn)


User.code_change = _code_change  # type: ignore[method-assign]

# The 0.1.0 shape: its fields, and its methods (the same in both versions).
_State_0_1_0 = dataclasses.make_dataclass(
    "_State", [(f.name, f.type) for f in dataclasses.fields(_State)
               if f.name not in _NEW_FIELDS], slots=True,
    namespace={k: v for k, v in vars(_State).items()
               if callable(v) and not k.startswith("__")})
'''


def _users_v2(src: str) -> str:
    src = _patch(src, "import logging\n", "import dataclasses\nimport logging\nimport os\n",
                 "users imports")
    src = _patch(src, "    last_push: float = -1e18\n",
                 "    last_push: float = -1e18\n    upgraded_from: Any = None\n", "users _State")
    src = _patch(src, "            case (\"forwarding\",):",
                 "            case (\"version\",):\n"
                 "                return self._reply((VSN, s.upgraded_from), s)\n"
                 "            case (\"forwarding\",):", "users handle_call")
    return src + USERS_TAIL


CONNECTION_TAIL = '''

# ---------------------------------------------------------------- 0.2.0: code_change


def _listener_code_change(self: Listener, old_vsn: Any, st: _Listen, extra: Any) -> Any:
    if isinstance(old_vsn, tuple) and old_vsn[:1] == ("down",):
        return st  # this acceptor already starts connections through the current module
    from chat.app import tls_context
    from chat.config import ChatConfig
    from otp import application
    from otp.process import exit, unlink

    cfg = ChatConfig.model_validate(application.get_all_env("chat"))
    lim = cfg.limits
    tls = None
    if cfg.listen.tls is not None:
        tls = tls_context(cfg.listen.tls.certfile, cfg.listen.tls.keyfile)
    ctx = ConnCtx(max_frame=lim.max_frame, max_body=lim.max_body,
                  idle_timeout=lim.idle_timeout, max_bad_frames=lim.max_bad_frames,
                  send_buffer=lim.send_buffer, admin_token=cfg.admin_token)
    unlink(st.acceptor)
    exit(st.acceptor, "kill")
    st.acceptor = spawn_link(_acceptor, st.sock, tls, ctx)
    return st


Listener.code_change = _listener_code_change  # type: ignore[method-assign]
'''


def _connection_v2(src: str) -> str:
    src = _patch(src, 'SERVER = "chat/0.1.0"', 'SERVER = "chat/0.2.0"', "connection SERVER")
    src = _patch(src, "    if t == \"bye\":\n",
                 "    if t == \"version\":\n"
                 "        r = _user_call(c, (\"version\",))\n"
                 "        return _ok(rid, server=SERVER, user=r[0], migrated_from=r[1])\n"
                 "    if t == \"bye\":\n", "connection dispatch")
    return src + CONNECTION_TAIL


def write_chat_v2(pkg: Path) -> Path:
    """Copy the repository's ``chat`` package to ``pkg`` and turn it into 0.2.0."""
    import chat

    shutil.copytree(Path(chat.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    init.write_text(_patch(init.read_text(), '"chat", "0.1.0"', '"chat", "0.2.0"', "APP"))
    proto = pkg / "protocol.py"
    proto.write_text(_patch(proto.read_text(), '    "bye": {},\n',
                            '    "bye": {},\n    "version": {},\n', "protocol REQUESTS"))
    users = pkg / "users.py"
    users.write_text(_users_v2(users.read_text()))
    conn = pkg / "connection.py"
    conn.write_text(_connection_v2(conn.read_text()))
    return pkg


def write_projects(base: Path, config_text: str | None = None) -> tuple[Path, Path]:
    """Two project trees under ``base`` (``v1/``, ``v2/``) with their release specs and
    the test config; returns the two spec paths."""
    cfg = config_text if config_text is not None else config()
    specs = []
    for name, spec in (("v1", SPEC_V1), ("v2", SPEC_V2)):
        d = base / name
        (d / "releases").mkdir(parents=True)
        (d / "config").mkdir()
        (d / "config" / "test.yaml").write_text(cfg)
        (d / "releases" / "chat.yaml").write_text(spec)
        specs.append(d / "releases" / "chat.yaml")
    write_chat_v2(base / "v2" / "chat_020" / "chat")
    return specs[0], specs[1]


def build_bundles(base: Path, config_text: str | None = None) -> tuple[Path, Path]:
    """Build the 0.1.0 and 0.2.0 bundles under ``base``; returns the two tarballs."""
    from otp import release

    s1, s2 = write_projects(base, config_text)
    return (release.build(s1, base / "_build1"), release.build(s2, base / "_build2"))
