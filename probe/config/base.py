"""What every config section shares: no unknown keys, validation on assignment, one-word fields, and the
stable hash that keys configs and artifacts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict


def single_word(v: str) -> str:
    """``v`` if it is one word without spaces, else a ValueError naming it."""
    if not v or len(v.split()) != 1:
        raise ValueError(f"must be a single word without spaces, got {v!r}")
    return v


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
