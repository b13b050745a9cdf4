"""Test configuration: gevent's monkey-patching first, then the otp test plugin."""

import otp

otp.patch()
