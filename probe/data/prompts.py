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


def _literal_map(prompt: str, fn) -> str:
    """``prompt`` with ``fn`` applied to its literal text (the fields left as they are)."""
    out = []
    for literal, field, spec, conv in string.Formatter().parse(prompt):
        out.append(fn(literal).replace("{", "{{").replace("}", "}}"))
        if field is not None:
            out.append("{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def _swap_fields(prompt: str) -> str | None:
    """A pair template with its two fields' places exchanged (each keeps the literal text around it)."""
    if "{text_pair}" not in prompt:
        return None
    return prompt.replace("{text}", "\0").replace("{text_pair}", "{text}").replace("\0", "{text_pair}")


def template_variants(prompt: str, words: list[str],
                      synonyms: list[str] | None = None) -> list[tuple[str, str, list[str]]]:
    """Format variants of a training template (Sclar et al. 2023, "Quantifying Language Models' Sensitivity
    to Spurious Features in Prompt Design"): ``(name, template, label words)``, each changing one element
    and meaning the same: the separator after a field name (``:`` to `` -`` and to ``=``), the spacing
    around it, the casing of the field names, a newline more and a newline fewer, the order of the
    fields (pair tasks), the label words capitalised and lower-cased, and the label words swapped for
    ``synonyms`` (one per class) when given. A variant identical to the template is left out."""
    words = list(words)
    edits = [
        ("separator ' -'", _literal_map(prompt, lambda s: s.replace(":", " -")), words),
        ("separator '='", _literal_map(prompt, lambda s: s.replace(":", " =")), words),
        ("no space after separator", _literal_map(prompt, lambda s: s.replace(": ", ":")), words),
        ("double space", _literal_map(prompt, lambda s: s.replace(" ", "  ")), words),
        ("field names upper case", _literal_map(prompt, str.upper), words),
        ("field names lower case", _literal_map(prompt, str.lower), words),
        ("newline more", _literal_map(prompt, lambda s: s.replace("\n", "\n\n")), words),
        ("newline fewer", _literal_map(prompt, lambda s: s.replace("\n", " ")), words),
        ("fields swapped", _swap_fields(prompt), words),
        ("label words capitalised", prompt, [w[:1].upper() + w[1:] for w in words]),
        ("label words lower case", prompt, [w.lower() for w in words]),
    ] + ([("label word synonyms", prompt, list(synonyms))] if synonyms else [])
    seen, out = {(prompt, tuple(words))}, []
    for name, template, ws in edits:
        if template is not None and (template, tuple(ws)) not in seen:
            seen.add((template, tuple(ws)))
            out.append((name, template, ws))
    return out
