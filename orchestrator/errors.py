"""The orchestrator's one error type for bad input, at the bottom of its layers.

Every layer raises a UserError (or a subclass naming its area) for something the person running
fwbench can fix; the CLI prints its message without a traceback and exits with code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment: the message names what is wrong and what to do."""
