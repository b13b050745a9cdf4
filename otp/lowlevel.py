"""The one door into the kernel, for library code (behaviours, networking, tables).

Placeholder: grows in the next commit.
"""

from __future__ import annotations

from otp._core.localvars import NodeVar, ProcessVar
from otp._core.node import Node, current_node

__all__ = ["Node", "NodeVar", "ProcessVar", "current_node"]
