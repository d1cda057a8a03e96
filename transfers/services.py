"""Moved to the ``transfers.workflow`` package (one module per part of a transfer's life).

This module re-exports it while callers move over; new code imports ``transfers.workflow``.
"""

from transfers.permissions import target_roles  # noqa: F401
from transfers.workflow import *  # noqa: F403
from transfers.workflow import __all__  # noqa: F401
