"""chat/ is built only on otp's public API: no otp._core, no private otp modules, no
gevent or greenlet (the stdlib socket/ssl are cooperative after otp.patch())."""

from __future__ import annotations

import ast
import pathlib

import pytest

CHAT = pathlib.Path(__file__).resolve().parent.parent / "chat"
PUBLIC = {"otp", "otp.process", "otp.node", "otp.errors", "otp.threads", "otp.gen_server",
          "otp.supervisor", "otp.application", "otp.config", "otp.logger", "otp.tables",
          "otp.sys", "otp.net", "otp.serve", "otp.httpd", "otp.metrics"}


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "otp":
                for a in node.names:
                    yield f"otp.{a.name}"


@pytest.mark.parametrize("path", sorted(CHAT.glob("*.py")), ids=lambda p: p.name)
def test_chat_imports_only_the_public_otp_api(path):
    bad = [m for m in _imports(path)
           if m.split(".")[0] in ("gevent", "greenlet")
           or (m.split(".")[0] == "otp" and m not in PUBLIC)]
    assert bad == [], f"{path.name} imports non-public modules: {bad}"
