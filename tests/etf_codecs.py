"""Both implementations of the External Term Format codec, for the codec tests that run
under each: the C accelerator (otp/dist/_etf_accel.c, when it is built) and the Python
reference of otp/dist/_etf.py.

A test module runs all its tests under both with::

    codec = codec_fixture(__name__)   # swaps the module's encode/decode per run
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otp.dist import _etf

try:
    from otp.dist import _etf_accel
except ImportError:  # built without a C compiler
    _etf_accel = None  # type: ignore[assignment]
else:
    _etf_accel.setup(vars(_etf))  # also when OTPY_PURE_ETF=1 kept it out of _etf

NOT_BUILT = "the C accelerator otp.dist._etf_accel is not built (no C compiler at install?)"

Codec = tuple[Callable[..., bytes], Callable[..., tuple[Any, int]]]


def codecs() -> dict[str, Codec | None]:
    """name -> (encode, decode); None for the C one when it is not built."""
    c = (_etf_accel.encode, _etf_accel.decode) if _etf_accel is not None else None
    return {"c": c, "python": (_etf._py_encode, _etf._py_decode)}


def codec_fixture(module_name: str) -> Any:
    """A module-scoped autouse fixture running every test of the module once per
    implementation, with the module's ``encode``/``decode`` bound to it."""

    @pytest.fixture(scope="module", autouse=True, params=["c", "python"])
    def codec(request: pytest.FixtureRequest) -> Iterator[str]:
        pair = codecs()[request.param]
        if pair is None:
            pytest.skip(NOT_BUILT)
        module = sys.modules[module_name]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "encode", pair[0])
            mp.setattr(module, "decode", pair[1])
            yield request.param

    return codec
