"""The run folder while a run writes into it (docs/architecture.md, "A run"): taken with a lock file
before anything else, the previous run's outputs kept aside while the new run works, and put back
when it fails, so that a refused or failed rerun leaves a finished run exactly as it was.

- ``.probe.lock`` is created exclusively (``O_CREAT | O_EXCL``, atomic on a local file system) and
  holds the process id, host and start time. A second run into the folder is refused while the
  holder lives; a lock left by a process that is gone from this host is taken over; a lock from
  another host cannot be checked and is refused with the file to delete.
- ``.probe-previous/`` receives, when the new run starts, the files the previous run wrote (its
  manifest's list, :func:`probe.rundir.probe_outputs`) and its records (``summary.json``,
  ``config.yaml``, ``manifest.json``, ``index.html``, ``timings.json``); the user's other files stay
  where they are; a model folder the new run replaces (fine-tuned with other settings) joins them. It
  is dropped once the new run is complete and moved back if the new run fails or is interrupted. A
  leftover one (the process was killed) is settled when the next run starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from probe.engine.context import log
from probe.errors import ProbeError
from probe.rundir import (ASIDE, LOCK, MANIFEST, probe_outputs, process_alive, read_json, read_manifest,
                          running_marker)

RECORDS = ("summary.json", "config.yaml", MANIFEST, "index.html", "timings.json")


def _holder_problem(run_dir: Path, holder) -> str | None:
    """Why the lock ``holder`` (the lock file's content) keeps this run out; None when its process is gone."""
    lock = run_dir / LOCK
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return (f"run folder {str(run_dir)!r} is being taken by another run (lock file {str(lock)!r}); wait a "
                "moment, or delete that file if no run is using the folder")
    pid, host = holder["pid"], holder.get("host")
    if host != socket.gethostname():
        return (f"run folder {str(run_dir)!r} is locked by process {pid} on host {host!r}, which cannot be checked "
                f"from here; wait for that run, or delete {str(lock)!r} if it is gone")
    if process_alive(pid, holder.get("started")):
        return (f"run folder {str(run_dir)!r} is in use by a run that is still going (process {pid} on this host); "
                "wait for it to finish or stop it")
    return None


def _acquire(run_dir: Path) -> None:
    lock = run_dir / LOCK
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = read_json(lock)
            problem = _holder_problem(run_dir, holder)
            if problem:
                raise ProbeError(problem) from None
            log(f"taking over {lock}: its process {holder['pid']} is gone")
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(running_marker(), fh)
        return
    raise ProbeError(f"run folder {str(run_dir)!r}: cannot take the lock {str(lock)!r}; other runs keep starting in it")


@contextmanager
def folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (created when missing) for one run; a folder this created and left empty (a run
    refused before it wrote anything) is removed again."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProbeError(f"output_dir: cannot create the run folder {str(run_dir)!r} ({e.strerror}); "
                         "allowed: a writable folder path") from None
    _acquire(run_dir)
    try:
        yield
    finally:
        (run_dir / LOCK).unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def keep_aside(run_dir: Path) -> None:
    """Move the previous run's outputs and records into ``.probe-previous/`` (see the module docstring)."""
    aside = run_dir / ASIDE
    if aside.is_dir():
        summary = read_json(run_dir / "summary.json")
        if isinstance(summary, dict) and summary.get("status") == "complete":
            shutil.rmtree(aside)  # the run after it completed; only the drop was missed
        else:
            put_back(run_dir)  # a rerun that was killed: back to the run before it
    names = sorted(set(probe_outputs(run_dir)) | {n for n in RECORDS if (run_dir / n).is_file()})
    for name in names:
        _move(run_dir / name, aside / name)


def keep_model_aside(folder: Path) -> None:
    """Before a model folder of the run (``models/<name>``) is replaced by one made with another key:
    while a rerun keeps the previous run's outputs aside, the previous model goes with them."""
    run_dir = folder.parent.parent
    aside = run_dir / ASIDE / "models" / folder.name
    if folder.parent.name == "models" and (run_dir / ASIDE).is_dir() and folder.is_dir() and not aside.exists():
        _move(folder, aside)


def put_back(run_dir: Path) -> bool:
    """After a failed or interrupted run: remove what it wrote and move ``.probe-previous/`` back (model
    folders whole). True when what came back is a complete run (its ``summary.json`` stands, unchanged)."""
    aside = run_dir / ASIDE
    if not aside.is_dir():
        return False
    for model in sorted((aside / "models").glob("*")):
        shutil.rmtree(run_dir / "models" / model.name, ignore_errors=True)
        _move(model, run_dir / "models" / model.name)
    kept = {str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file()}
    for name in read_manifest(run_dir) or {}:
        path = run_dir / name
        if name not in kept and ".." not in Path(name).parts and path.is_file() and not path.is_symlink():
            path.unlink()
    if MANIFEST not in kept:
        (run_dir / MANIFEST).unlink(missing_ok=True)
    for name in sorted(kept):
        _move(aside / name, run_dir / name)
    shutil.rmtree(aside)
    summary = read_json(run_dir / "summary.json")
    return isinstance(summary, dict) and summary.get("status") == "complete"


def drop_aside(run_dir: Path) -> None:
    """The new run is complete: what it kept aside is replaced."""
    shutil.rmtree(run_dir / ASIDE, ignore_errors=True)
