"""Word heatmaps of attributions as HTML spans (rendering only; the scores come from
:mod:`probe.analyses.attribution`)."""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

NEGATIVE_RGB = (0x00, 0x72, 0xB2)  # Okabe-Ito blue
POSITIVE_RGB = (0xD5, 0x5E, 0x00)  # Okabe-Ito vermillion


def render_heatmap_html(words: Sequence[str], scores: Sequence[float], scale: float | None = None) -> str:
    """HTML spans, background intensity ∝ |score| / ``scale`` (default: max |score|).

    Diverging and colour-blind safe (Okabe & Ito): vermillion #D55E00 for positive
    (supports the prediction), blue #0072B2 for negative. Every word is ``html.escape``d.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(words) != scores.size:
        raise ValueError(f"{len(words)} words but {scores.size} scores")
    finite = np.abs(scores[np.isfinite(scores)])
    scale = float(scale) if scale else float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    spans = []
    for w, s in zip(words, scores):
        s = float(s) if np.isfinite(s) else 0.0
        alpha = min(abs(s) / scale, 1.0)
        r, g, b = POSITIVE_RGB if s >= 0 else NEGATIVE_RGB
        spans.append(
            f'<span class="attr" title="{s:+.4f}" style="background-color: rgba({r}, {g}, {b}, {alpha:.3f})">'
            f"{html.escape(w)}</span>"
        )
    return " ".join(spans)
