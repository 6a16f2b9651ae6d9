"""The edges of a run's life cycle (:func:`probe.engine.run.run_lifecycle`): taking the folder (its lock,
then whether it may take the run), SIGTERM handled like Ctrl-C, and the error text a failed run records."""

from __future__ import annotations

import signal
import threading
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from probe.engine.context import log
from probe.engine.folder import folder_lock
from probe.errors import Interrupted, ProbeError
from probe.rundir import check_run_folder

MAX_ERROR_CHARS = 4000


def check_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, a folder the run must not write into (:func:`probe.rundir.check_run_folder`:
    a non-empty folder that is not a probe run folder without ``overwrite``, symbolic links inside, a
    live run); the main process decides for every process of a data-parallel run."""
    from probe.distributed import current

    dist = current()
    problem, note = dist.agree(check_run_folder(run_dir, overwrite) if dist.is_main else None)
    if problem:
        raise ProbeError(problem)
    if note:
        log(note)


@contextmanager
def take_folder(run_dir: Path, overwrite: bool) -> Iterator[None]:
    """Hold ``run_dir`` for the block: its lock (:func:`probe.engine.folder.folder_lock`, taken by the main
    process before anything else), then :func:`check_folder`; every process raises the same refusal."""
    from probe.distributed import current

    dist = current()
    with ExitStack() as stack:
        problem = None
        if dist.is_main:
            try:
                stack.enter_context(folder_lock(run_dir))
            except ProbeError as e:
                problem = str(e)
        problem = dist.agree(problem)
        if problem:
            raise ProbeError(problem)
        check_folder(run_dir, overwrite)
        yield


def error_text(e: BaseException) -> str:
    """``Type: message`` for ``summary.json``: the whole message (every line), or where it was raised
    when the message is empty, so that a failed run always says something useful."""
    if isinstance(e, Interrupted):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by SIGINT (Ctrl-C)"
    message = str(e).strip()
    if not message:
        frames = traceback.extract_tb(e.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        message = f"(no message){where}"
    text = f"{type(e).__name__}: {message}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`~probe.errors.Interrupted` (a KeyboardInterrupt), so a
    terminated run is marked as interrupted instead of staying ``running``. Only the main thread can
    handle signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM acts as it would have
        raise Interrupted(signum, "SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    if previous is None:  # installed outside Python: restore the default
        previous = signal.SIG_DFL
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
