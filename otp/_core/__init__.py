"""The kernel of ``otp``: the only package that imports gevent and greenlet.

Private: use the public modules (``otp.process``, ``otp.node``...) instead.
"""
