"""A WhatsApp-style messaging server written only against otp's public API.

Each user is a supervised process that owns its inbox; messages are stored durably,
forwarded actor to actor with retry and back-off until acknowledged, streamed to the
device when it is connected, and wiped from the server once the device accepted them.
"""
