"""A :class:`~probe.causal.experiment.Predictor` that reads held-out batches only until it knows enough
(``analyses.precision: budget``; docs/design.md §5, "Precision budgets").

The held-out counterfactual pairs are cut into batches (a seeded random order). Each call measures
batch after batch until the Wilson 95 % interval of every feature's conflicting accuracy is at most
``width`` wide (:func:`probe.analyses.budget.wilson_width`), or every batch is used; the head scan
likewise stops adding batches once the s-only error's interval is that narrow or ``scan_cap``
conflicting pairs are read. Per-example values of the batches used are concatenated, so every metric
and bootstrap interval downstream is computed exactly as on the full set, only on fewer pairs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from probe.analyses.budget import Stop, stop_reason, wilson_width


class BatchedPredictor:
    """The :class:`~probe.causal.experiment.Predictor` protocol over ``batches`` (one predictor per batch of
    held-out pairs), stopping each call at the interval ``width``; ``calls`` and ``scans`` record what each
    call used: ``(pairs, width, reason)``."""

    def __init__(self, batches: Sequence, width: float, scan_cap: int, n_pairs: int) -> None:
        if not batches:
            raise ValueError("BatchedPredictor needs at least one batch")
        self.batches, self.width, self.scan_cap = list(batches), float(width), int(scan_cap)
        self.n_pairs = int(n_pairs)
        self.features = list(self.batches[0].features)
        self.calls: list[tuple[int, float, str]] = []
        self.scans: list[tuple[int, float, str]] = []

    def __call__(self, features: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        features = self.features if features is None else features
        parts: list[dict[str, dict[str, np.ndarray]]] = []
        used, width, reason = 0, 1.0, None
        for predict in self.batches:
            parts.append(predict(features))
            used += max((len(v["clean_accuracy"]) for v in parts[-1].values()), default=0)  # a batch's pairs
            width = max((wilson_width(*_count(p["conflicting_accuracy"] for p in _of(parts, f))) for f in features),
                        default=0.0)
            reason = stop_reason(width, self.width, used, self.n_pairs, "conflicting-accuracy interval width")
            if reason is not None:
                break
        self.calls.append((used, width, reason or f"cap: all {used} pairs read"))
        return {f: {m: np.concatenate([p[f][m] for p in parts]) for m in parts[0][f]} for f in features}

    def clean_correct(self) -> np.ndarray:
        return np.concatenate([p.clean_correct() for p in self.batches])

    def scan(self, feature: str, seed: int) -> tuple[Callable[[], float], int]:
        scans = [p.scan(feature, seed) for p in self.batches]
        cap = 0
        for _, n in scans:
            if cap >= self.scan_cap:
                break
            cap += n

        def s_only_error() -> float:
            errors, n, width = 0.0, 0, 1.0
            for evaluate, n_b in scans:
                if n_b:
                    errors += float(evaluate()) * n_b
                    n += n_b
                width = wilson_width(errors, n)
                reason = stop_reason(width, self.width, n, self.scan_cap, "s-only-error interval width")
                if reason is not None:
                    break
            else:
                reason = f"cap: all {n} conflicting pairs read"
            self.scans.append((n, width, reason))
            return errors / n if n else float("nan")

        return s_only_error, cap

    def stops(self, feature: str) -> list[Stop]:
        """One ``budgets`` row for the layer swaps and head rows, one for the head scan."""
        return [s for s in (_summary("ablation", self.calls, self.n_pairs, self.width, feature),
                            _summary("head scan", self.scans, self.scan_cap, self.width, feature)) if s]


def _of(parts, feature):
    return [p[feature] for p in parts]


def _count(arrays) -> tuple[float, int]:
    v = np.concatenate(list(arrays))
    return float(v.sum()), int(v.size)


def _summary(analysis: str, calls: list[tuple[int, float, str]], cap: int, width: float, feature: str) -> Stop | None:
    if not calls:
        return None
    used = [c[0] for c in calls]
    by_interval = sum(not c[2].startswith("cap") for c in calls)
    reason = f"{by_interval} of {len(calls)} conditions by the interval, {len(calls) - by_interval} at the cap"
    return Stop(analysis, max(used), cap, reason, dict(model="finetuned", property=feature),
                f"{len(calls)} conditions, {min(used)}-{max(used)} pairs", max(c[1] for c in calls), width)
