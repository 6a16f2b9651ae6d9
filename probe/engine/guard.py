"""One failing analysis does not take the run down (issue #29): an analysis stage that raises is
recorded (``summary.json["analysis_errors"]`` and a warning in the report) and the run goes on to
write every other table, its summary and its report. Ctrl-C and SIGTERM still stop the run."""

from __future__ import annotations

import functools
import traceback
from pathlib import Path
from typing import Callable

import pandas as pd

from probe.engine.context import RunContext, log
from probe.engine.lifecycle import error_text

Tables = dict[str, pd.DataFrame]


def guarded(name: str) -> Callable[[Callable[..., Tables]], Callable[..., Tables]]:
    """Decorate an analysis stage ``fn(ctx, model, seed, ...) -> tables``: when it raises, the error is
    recorded in ``ctx.analysis_errors`` and logged, and the stage gives no tables."""

    def wrap(fn: Callable[..., Tables]) -> Callable[..., Tables]:
        @functools.wraps(fn)
        def run(ctx: RunContext, model, seed: int, *args, **kwargs) -> Tables:
            try:
                return fn(ctx, model, seed, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any failure of one analysis; KeyboardInterrupt passes
                frames = traceback.extract_tb(e.__traceback__)
                where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
                error = error_text(e) + where
                ctx.analysis_errors.append({"analysis": name, "seed": seed, "error": error})
                log(f"warning: {name} failed for seed {seed}: {error}; the run's other results are written")
                return {}

        return run

    return wrap


def error_warnings(errors: list[dict]) -> list[str]:
    """One line per failed analysis, for ``summary.json["warnings"]`` (shown in the report)."""
    return [f"{e['analysis']} failed for seed {e['seed']} and its tables are missing: {e['error']}" for e in errors]
