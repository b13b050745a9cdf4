"""docs/upgrades.md, run as written: the chat 0.1.0 release from a copy of this
repository runs as a daemon; the tutorial's edits make a 0.2.0 (a new field in the user
process's state, a code_change both ways); ``otp release appup`` writes the
instructions, ``build --upgrade-from`` builds it; the node is upgraded (dry run, then
health-gated), checked, downgraded, and 0.2.0 removed. Paths go to a temporary
directory and the listener to any free port. Loopback only; only our own pid is
killed."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.release_helpers import env, kill_by_pid

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "upgrades.md"
TOKEN = re.compile(
    r"(?:<!-- edit: (?P<file>\S+), (?:after: \"(?P<anchor>.*?)\"|(?P<append>append)) -->\n"
    r"```python\n(?P<code>.*?)```)|(?:```sh\n(?P<sh>.*?)```)", re.S)


def steps(text: str) -> list[tuple[str, ...]]:
    """The tutorial in order: ("sh", command) and ("edit", file, anchor, code)."""
    out: list[tuple[str, ...]] = []
    for m in TOKEN.finditer(text):
        if m.group("sh") is not None:
            for line in m.group("sh").splitlines():
                cmd = re.sub(r"\s+#.*$", "", line).strip()
                if cmd and not cmd.startswith("#"):
                    out.append(("sh", cmd))
        else:
            anchor = m.group("anchor")
            anchor = None if anchor is None else anchor.encode().decode("unicode_escape")
            out.append(("edit", m.group("file"), anchor, m.group("code")))
    return out


def edit(checkout: Path, file: str, anchor: str | None, code: str) -> None:
    path = checkout / file
    text = path.read_text()
    if anchor is None:
        text += code
    else:
        assert text.count(anchor) == 1, f"{file}: the tutorial's anchor {anchor!r} is not " \
                                        f"there once: update docs/upgrades.md"  # fmt: skip
        text = text.replace(anchor, anchor + code)
    path.write_text(text)


def test_the_upgrade_tutorial_runs_as_written(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    for d in ("chat", "otp", "releases", "config"):
        shutil.copytree(REPO / d, checkout / d,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    rel = tmp_path / "rel"
    py = shlex.quote(sys.executable)
    e = {**env(tmp_path), "OTP_CHAT__LISTEN__PORT": "0",
         "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    outputs: dict[str, list[str]] = {}
    todo = steps(DOC.read_text(encoding="utf-8"))
    assert sum(1 for s in todo if s[0] == "edit") == 3
    try:
        for step in todo:
            if step[0] == "edit":
                edit(checkout, *step[1:])
                continue
            cmd = step[1]
            if cmd.startswith("export OTP_PYTHON="):
                continue  # env() sets it to this interpreter
            cmd = (cmd.replace("/tmp/chat-upgrade", str(rel))
                   .replace(".venv/bin/otp", f"{py} -m otp"))
            res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                                 env=e, cwd=checkout, timeout=180)
            assert res.returncode == 0, f"{cmd}: {res.stdout}{res.stderr}"
            key = " ".join(cmd.split()[1:3]) if "bin/chat" in cmd else cmd
            outputs.setdefault(key, []).append(res.stdout + res.stderr)
    finally:
        pid_file = rel / "run" / "chat.pid"
        if pid_file.exists():
            kill_by_pid(int(pid_file.read_text()))
    appup = next(v for k, v in outputs.items() if "appup" in k)[0]
    assert "- [update, chat.users]" in appup
    assert "# chat: only its version changed" in appup
    assert "no failure: the upgrade would go through" in outputs["upgrade 0.2.0"][0]
    assert "upgraded to 0.2.0 (permanent)" in outputs["upgrade 0.2.0"][1]
    assert "healthy (bin/chat ping)" in outputs["upgrade 0.2.0"][1]
    up, down = outputs["status"][1], outputs["status"][2]
    assert "chat 0.2.0 running" in up and "applications  chat 0.2.0" in up
    assert "last upgrade   0.1.0 -> 0.2.0: ok" in up and "[update, chat.users]" not in up
    assert "update chat.users: 1 process(es) moved" in up
    state = next(v[0] for k, v in outputs.items() if "get_state" in k)
    assert ast.literal_eval(state.strip().splitlines()[-1]) == 0
    assert "chat 0.1.0 running" in down and "applications  chat 0.1.0" in down
    assert "last downgrade 0.2.0 -> 0.1.0: ok" in down
    assert "removed 0.2.0" in outputs["remove 0.2.0"][0]
    assert "0.2.0" not in outputs["versions"][0]
    log = (rel / "run" / "chat.log").read_text()
    assert "upgrade of chat from 0.1.0 to 0.2.0: plan [['update', 'chat.users']]" in log
    assert "Traceback" not in log, log
