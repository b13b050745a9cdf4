"""The build of otpy's C accelerator of the External Term Format codec
(otp/dist/_etf_accel.c). Everything else is in pyproject.toml.

The extension is optional: without a C compiler (or the Python headers) the install
still succeeds, and otp.dist._etf uses its pure-Python codec.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "otp.dist._etf_accel",
            sources=["otp/dist/_etf_accel.c"],
            optional=True,
        )
    ]
)
