"""Error types that more than one part of the local engine raises, so that none of them imports
another's machinery only for its error type."""
from __future__ import annotations

from pipeline.local.state.db import StateError


class PolicyError(StateError):
    """A step's CacheConfig or RetryPolicies that cannot be applied (the executor refuses the
    definition before any step runs); the message says what to write instead."""
