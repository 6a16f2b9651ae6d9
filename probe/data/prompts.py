"""Prompt templates for label-word classifiers (``task.prompt``), checked without importing torch.

A template is a ``str.format`` string with ``{text}`` and, for pair tasks, ``{text_pair}``; the model
answers right after it with a class's label word (:mod:`probe.models.label_words`).
"""

from __future__ import annotations

import string

from probe.errors import ProbeError

FIELDS = ("text", "text_pair")


def check_prompt(prompt: str, pair: bool = False) -> str:
    """``prompt`` if it is a usable template: ``{text}`` once, ``{text_pair}`` once for pair tasks (never
    otherwise), no other field; else a one-line :class:`ProbeError`."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
    except ValueError as e:
        raise ProbeError(f"task.prompt: {e}; write literal braces as {{{{ and }}}}") from None
    allowed = FIELDS if pair else FIELDS[:1]
    bad = [f for f in fields if f not in allowed]
    if bad:
        raise ProbeError(f"task.prompt: unknown field {{{bad[0]}}}; allowed: " + ", ".join(f"{{{f}}}" for f in allowed))
    for f in allowed:
        if fields.count(f) != 1:
            raise ProbeError(f"task.prompt: needs {{{f}}} exactly once, got {fields.count(f)} in {prompt!r}")
    return prompt


def answer_text(word: str) -> str:
    """What follows the prompt for ``word``: the word after one space (``" business"``), unless it starts
    with whitespace already."""
    return word if word[:1].isspace() else " " + word
