"""Task kinds: what differs between, say, text classification and token classification.

A run (:mod:`probe.engine`) asks its kind, chosen by ``task.type``, how data loads, which head the
model gets, what it is trained on, what a representation is and which tables and summary keys
the analyses write (:class:`probe.tasks.base.TaskKind`). A new kind is one module implementing
that interface plus a line here (docs/architecture.md shows a sketch).
"""

from __future__ import annotations

import importlib

#: ``task.type`` -> "module:class" of its :class:`~probe.tasks.base.TaskKind` (imported on first use)
TASK_KINDS: dict[str, str] = {
    "text-classification": "probe.tasks.sequence:SequenceClassification",
    "token-classification": "probe.tasks.tokens:TokenClassification",
}


def task_kind(name: str):
    """The task kind registered for ``task.type`` ``name``."""
    if name not in TASK_KINDS:
        from probe.errors import ProbeError

        raise ProbeError(f"task.type: {name!r} is unknown; allowed: {', '.join(TASK_KINDS)}")
    module, _, cls = TASK_KINDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
