"""Distribution: otpy nodes talking Erlang's distribution protocol to each other and
to BEAM nodes. The values that cross are described in docs/distribution.md.

>>> from otp.dist import Atom, ImproperList
>>> ImproperList([Atom("alias")], 1).tail
1
"""

from otp.dist._etf_types import (
    Atom,
    BadTerm,
    BitBinary,
    ForeignException,
    Fun,
    ImproperList,
    NotSendable,
    Port,
    register_type,
)

__all__ = [
    "Atom",
    "BadTerm",
    "BitBinary",
    "ForeignException",
    "Fun",
    "ImproperList",
    "NotSendable",
    "Port",
    "register_type",
]
