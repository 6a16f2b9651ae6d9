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
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(prompt) if f is not None]
    except ValueError as e:
        raise ProbeError(f"task.prompt: {e}; write literal braces as {{{{ and }}}}") from None
    fields = [f for f, _, _ in parsed]
    odd = [_field(*p) for p in parsed if p[1] or p[2]]
    if odd:  # the texts are placed as they are, so that character offsets point into them
        raise ProbeError(f"task.prompt: {odd[0]} has a conversion or format spec; allowed: plain fields such as {{text}}")
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


def _field(field: str, spec: str, conv: str | None) -> str:
    return "{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _literal_map(prompt: str, fn) -> str:
    """``prompt`` with ``fn`` applied to its literal text (the fields left as they are)."""
    out = []
    for literal, field, spec, conv in string.Formatter().parse(prompt):
        out.append(_escape(fn(literal)))
        if field is not None:
            out.append(_field(field, spec, conv))
    return "".join(out)


def field_order(prompt: str) -> str | None:
    """A pair template with its two texts in the other order, each keeping its field name: a field's *name* is
    the literal text from the last line break before it (or, between the fields without one, after the
    leading whitespace) up to the field, and the two blocks name + field trade places, so
    ``"Premise: {text}\nHypothesis: {text_pair}\nLabel:"`` becomes ``"Hypothesis: {text_pair}\nPremise:
    {text}\nLabel:"``: the same texts under the same names, read in the other order. None for a single-text
    template."""
    parts = list(string.Formatter().parse(prompt))
    fields = [i for i, (_, f, _, _) in enumerate(parts) if f is not None]
    if sorted(parts[i][1] for i in fields) != sorted(FIELDS):
        return None
    a, b = fields
    l0 = "".join(p[0] for p in parts[:a + 1])  # the literal text before the first field (escaped braces split it)
    l1 = "".join(p[0] for p in parts[a + 1:b + 1])
    tail = "".join(_escape(lit) + ("" if f is None else _field(f, s, c)) for lit, f, s, c in parts[b + 1:])
    cut0 = l0.rfind("\n") + 1
    cut1 = l1.rfind("\n") + 1 if "\n" in l1 else len(l1) - len(l1.lstrip())
    head, name1, sep, name2 = l0[:cut0], l0[cut0:], l1[:cut1], l1[cut1:]
    return (_escape(head) + _escape(name2) + _field(*parts[b][1:]) + _escape(sep) + _escape(name1)
            + _field(*parts[a][1:]) + tail)


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
        ("order of fields", field_order(prompt), words),
        ("label words capitalised", prompt, [w[:1].upper() + w[1:] for w in words]),
        ("label words lower case", prompt, [w.lower() for w in words]),
    ] + ([("label word synonyms", prompt, list(synonyms))] if synonyms else [])
    seen, out = {(prompt, tuple(words))}, []
    for name, template, ws in edits:
        if template is not None and (template, tuple(ws)) not in seen:
            seen.add((template, tuple(ws)))
            out.append((name, template, ws))
    return out
