"""Test configuration: gevent's monkey-patching first, then the otp test plugin (opt-in:
installing otpy registers nothing by itself)."""

import otp

otp.patch()

pytest_plugins = ["otp.testing"]
