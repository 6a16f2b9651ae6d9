"""Training-data augmentation for fine-tuning: random word deletion and counterfactual planting.

Pure functions of (texts, labels, rng, ...): they return new lists and never touch their inputs.
The fine-tuning loop draws them afresh every epoch from a generator seeded by (seed, epoch).
"""

from __future__ import annotations

import numpy as np

from probe.data.planted import insert_token, insertion_positions


def delete_words(texts: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each whitespace-separated word independently with probability ``p``.

    A text never loses all its words: when every word of a non-empty text is drawn for
    deletion, one of them (chosen uniformly) is kept. ``p = 0`` returns the texts unchanged.
    (Random deletion as in EDA, Wei & Zou 2019.)
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word deletion probability must be in [0, 1), got {p}")
    if p == 0.0:
        return list(texts)
    out = []
    for text in texts:
        words = text.split()
        if not words:
            out.append(text)
            continue
        keep = rng.random(len(words)) >= p
        if not keep.any():
            keep[rng.integers(len(words))] = True
        out.append(" ".join(w for w, k in zip(words, keep) if k))
    return out


def counterfactual_plant(
    texts: list[str], labels: np.ndarray, planted: list[tuple[str, int, int]], rate: float,
    rng: np.random.Generator,
) -> tuple[list[str], np.ndarray]:
    """Insert each planted token into a ``rate`` fraction of the examples of the *other* classes.

    ``planted`` holds ``(token, target class index, max_position)`` per planted feature. For each,
    every example whose label is not the target is chosen independently with probability
    ``rate`` and gets the token inserted at a uniform word position in
    ``[0, min(max_position, n_words)]`` (:func:`probe.data.planted.insert_token`); a chosen text
    that already holds the token as a word is left as it is. Labels are not changed, so the
    token stops predicting its class: counterfactually augmented data in the sense of Kaushik,
    Hovy & Lipton 2020 ("Learning the difference that makes a difference with
    counterfactually-augmented data", ICLR), with the token as the edited attribute.

    Returns the new texts and a boolean matrix ``[len(planted), len(texts)]`` of the examples
    chosen for each token. Examples of the target class are never changed.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"counterfactual rate must be in [0, 1], got {rate}")
    labels = np.asarray(labels)
    texts = list(texts)
    chosen = np.zeros((len(planted), len(texts)), dtype=bool)
    for k, (token, target, max_position) in enumerate(planted):
        mask = (labels != target) & (rng.random(len(texts)) < rate)
        idx = np.flatnonzero(mask)
        positions = insertion_positions([texts[i] for i in idx], max_position, rng)
        for i, pos in zip(idx, positions):
            if token not in texts[i].split():
                texts[i] = insert_token(texts[i], token, int(pos))
        chosen[k] = mask
    return texts, chosen
