"""Cached artifacts of a run: arrays (``cache/*.npz``) and model folders (``models/*``), each keyed by a
hash of what produced it and written atomically, so an interrupted or repeated run resumes instead of
recomputing (docs/design.md §3). Decisions that read the disk are the main process's, broadcast to
the others (:meth:`probe.distributed.Dist.agree`); only the main process writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from probe.engine.context import RunContext, log
from probe.engine.folder import keep_model_aside
from probe.rundir import atomic_directory, atomic_write_json

KEY_FILE = "probe_key.json"


def load_arrays(path: Path) -> dict[str, Any] | None:
    """The arrays of an ``.npz`` file, or None when it is missing or unreadable."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def cached_arrays(ctx: RunContext, path: Path, label: str, what: str, compute: Callable[[], dict]) -> dict:
    """The arrays at ``path`` when they are there and readable (recorded as reused under ``label``),
    else ``compute()``'s, saved there by the main process."""
    if ctx.dist.agree(path.is_file() and load_arrays(path) is not None):
        ctx.reused.append(label)
        log(f"extract: reused cached {what} {path.name}")
        return load_arrays(path)
    arrays = compute()
    if ctx.dist.is_main:
        save_arrays(path, **arrays)
    return arrays


def extract_sharded(ctx: RunContext, items: list, extract: Callable[[list, int], tuple[dict, int, float]],
                    axes: dict[str, int]) -> dict:
    """``extract(part, start) -> (arrays, tokens, seconds)`` on this process's contiguous shard of
    ``items`` (``start``: the index of its first item), the arrays gathered back in order along
    ``axes`` on every process; ``tokens`` summed, ``seconds`` the slowest shard's. With fewer items than
    processes every process extracts them all."""
    dist = ctx.dist
    sharded = dist.enabled and len(items) >= dist.world
    part, start = (list(dist.shard(items)), dist.rank * len(items) // dist.world) if sharded else (items, 0)
    arrays, tokens, seconds = extract(part, start)
    if sharded:
        arrays = dist.gather_rows(arrays, axes=axes)
    arrays["tokens"] = np.array(int(dist.sum(tokens) if sharded else tokens))
    arrays["seconds"] = np.array(dist.max(seconds))
    return arrays


def speed(arrays: dict) -> float | None:
    """Tokens per second of an extraction (None when it took no measurable time)."""
    seconds = float(arrays.get("seconds", 0))
    return float(arrays["tokens"]) / seconds if seconds > 0 else None


def key_matches(ctx: RunContext, folder: Path, key: str) -> bool:
    """Whether ``folder`` holds an artifact made with ``key`` (the main process decides)."""
    key_file = folder / KEY_FILE
    return ctx.dist.agree(key_file.is_file() and json.loads(key_file.read_text()).get("key") == key)


def write_keyed_folder(folder: Path, key: str, fill: Callable[[Path], None]) -> None:
    """Build a model folder with ``fill(tmp)`` in a temporary folder, add its key file, swap it in (the
    folder it replaces is kept aside with the previous run's outputs, :mod:`probe.engine.folder`)."""
    with atomic_directory(folder) as tmp:
        fill(tmp)
        atomic_write_json(tmp / KEY_FILE, {"key": key})
        keep_model_aside(folder)
