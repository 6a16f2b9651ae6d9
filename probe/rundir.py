"""The run directory contract (docs/design.md §3): atomic writes, what a run folder is (and whether the
process that writes it is still alive), and :class:`Run` for reading one back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from probe.errors import ProbeError


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a file.
    The file gets the mode a plain ``open`` would give it (0666 less the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Build a folder in a sibling temporary folder (yielded) and swap it into ``path`` only when the
    block succeeds: readers never see a half-written model folder, and a failure leaves the old one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def write_table(run_dir: Path, name: str, df: pd.DataFrame) -> None:
    """``tables/<name>.csv``, floats at full precision so reruns compare byte for byte."""
    write_output(run_dir, f"tables/{name}.csv", df.to_csv(index=False, float_format="%.10g"))


# --- what probe wrote in a run folder ------------------------------------------------------------

MANIFEST = "manifest.json"  # {"files": {relative path: sha256}}: every output file the run wrote
LOCK = ".probe.lock"  # held by the run writing the folder (probe.engine.folder)
ASIDE = ".probe-previous"  # the previous run's outputs while a rerun works (probe.engine.folder)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_output(run_dir: Path, name: str, text: str) -> None:
    """Write the output file ``run_dir/name`` atomically and list it in the folder's manifest."""
    atomic_write_text(Path(run_dir) / name, text)
    record_outputs(run_dir, [name])


def read_manifest(run_dir: Path) -> dict[str, str] | None:
    """``{relative path: sha256}`` of the files probe wrote in ``run_dir``; None when there is no readable manifest."""
    data = read_json(Path(run_dir) / MANIFEST)
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else None


def record_outputs(run_dir: Path, names: list[str], create: bool = True) -> None:
    """Add ``names`` (paths relative to ``run_dir``, already written) with their checksums to the manifest
    (started when there is none, unless not ``create``: a folder written before manifests keeps none)."""
    run_dir = Path(run_dir)
    files = read_manifest(run_dir)
    if files is None and not create:
        return
    files = files or {}
    files.update({n: _sha256(run_dir / n) for n in names})
    atomic_write_json(run_dir / MANIFEST, {"files": dict(sorted(files.items()))})


def damaged_tables(run_dir: Path) -> list[str]:
    """The manifest's tables that are missing, or whose bytes changed since the run wrote them
    (``tables/x.csv (missing)``, ``tables/y.csv (changed since the run wrote it)``)."""
    run_dir = Path(run_dir)
    out = []
    for name, digest in sorted((read_manifest(run_dir) or {}).items()):
        if name.startswith("tables/"):
            path = run_dir / name
            if not path.is_file():
                out.append(f"{name} (missing)")
            elif _sha256(path) != digest:
                out.append(f"{name} (changed since the run wrote it)")
    return out


def probe_outputs(run_dir: Path) -> list[str]:
    """The output files probe wrote in ``run_dir`` (relative paths that exist): the manifest's; for a
    run folder written before manifests, ``index.html``, ``timings.json``, ``tables/*.csv`` and
    ``tensorboard/``'s files; nothing for a folder that is not a probe run folder."""
    run_dir = Path(run_dir)
    files = read_manifest(run_dir)
    if files is None:
        if not (run_dir / "summary.json").is_file():
            return []
        legacy = [run_dir / "index.html", run_dir / "timings.json", *(run_dir / "tables").glob("*.csv"),
                  *(p for p in (run_dir / "tensorboard").rglob("*") if p.is_file())]
        files = {str(p.relative_to(run_dir)): "" for p in legacy}
    inside = [n for n in files if not Path(n).is_absolute() and ".." not in Path(n).parts and n != MANIFEST]
    return sorted(n for n in inside if (run_dir / n).is_file() and not (run_dir / n).is_symlink())


def read_table(path: Path) -> pd.DataFrame:
    """A stored CSV table; a one-line :class:`ProbeError` naming the file when it cannot be read."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ProbeError(f"{str(path)!r} is empty, not a CSV table; run the run again with probe run") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise ProbeError(f"{str(path)!r} is not a readable CSV table ({why}); run the run again with probe run") from None


# --- who is writing a run folder -----------------------------------------------------------------

def running_marker() -> dict[str, Any]:
    """What a ``running`` summary records about the process writing the folder: its id, host and start
    time, so that a reader can tell a live run from one whose process was killed."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}


def process_alive(pid: int, started: Any) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if isinstance(started, (int, float)) and proc.create_time() > started + 1:
            return False  # the id was reused by a process started after the run
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def run_state(summary: dict[str, Any]) -> str:
    """The status to believe: ``summary["status"]``, except that a ``running`` run whose process is gone
    from this host (killed with SIGKILL, or the machine restarted) is ``interrupted``. A run recorded on
    another host, or by a version that did not record its process, stays ``running``: it cannot be checked."""
    status = str(summary.get("status", "unknown"))
    pid = summary.get("pid")
    if status != "running" or not isinstance(pid, int) or summary.get("host") != socket.gethostname():
        return status
    return "running" if process_alive(pid, summary.get("started")) else "interrupted"


def not_complete(path: Path, summary: dict[str, Any]) -> str:
    """``run 'path' is not complete (status 'x')`` and what a reader can do about it, for one-line errors."""
    state = run_state(summary)
    who = f"process {summary.get('pid')} on host {summary.get('host')!r}"
    error = " ".join(str(summary.get("error") or "").split())  # one line, however long the message
    error = error if len(error) <= 300 else error[:297] + "..."
    detail = {"running": f"it is still running ({who})" if "pid" in summary else "it may still be running",
              "interrupted": f"{error or f'its {who} is gone'}; run the same command again to resume",
              "failed": f"{error or 'no error recorded'}; fix it and run the same command again"}
    tail = f"; {detail[state]}" if state in detail else ""
    return f"run {str(path)!r} is not complete (status {state!r}){tail}"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _is_probe_folder(path: Path) -> bool:
    """A run folder (``summary.json`` with a status, or a damaged one beside ``config.yaml``) or a
    sweep folder (``config.yaml`` with a ``compare`` section)."""
    summary, config = path / "summary.json", path / "config.yaml"
    if summary.is_file():
        data = read_json(summary)
        return (isinstance(data, dict) and "status" in data) or config.is_file()
    if config.is_file():
        import yaml

        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return False
        return isinstance(data, dict) and isinstance(data.get("compare"), list)
    return False


def _symlinks(path: Path, depth: int = 3) -> list[str]:
    """Symbolic links inside ``path`` (not following them), at most ``depth`` levels down."""
    out = []
    for root, dirs, files in os.walk(path):
        level = len(Path(root).relative_to(path).parts)
        out += [str(Path(root, n).relative_to(path)) for n in sorted(dirs + files) if Path(root, n).is_symlink()]
        if level + 1 >= depth:
            dirs[:] = []
    return out


def check_run_folder(path: Path, overwrite: bool = False) -> tuple[str | None, str | None]:
    """``(problem, note)`` for writing a run (or sweep) into ``path``. ``problem`` (a one-line refusal)
    when ``path`` is a non-empty folder that is not a probe run folder (unless ``overwrite``), holds a
    symbolic link (probe replaces what it writes, and would write through it), or is in use by a live
    run on this host; ``note`` when it resumes a run that was interrupted."""
    if not path.is_dir():
        return None, None
    links = _symlinks(path)
    if links:
        return (f"run folder {str(path)!r}: {links[0]} is a symbolic link; probe writes only real files and "
                "folders in a run folder; replace it with a folder or remove it"), None
    if not _is_probe_folder(path):
        if overwrite or not any(p.name != LOCK for p in path.iterdir()):
            return None, None
        return (f"output folder {str(path)!r} is not empty and is not a probe run folder (it has no probe "
                "summary.json); allowed: a new or empty folder, a probe run folder, or --overwrite (overwrite: "
                "true) to write into it anyway"), None
    summary = read_json(path / "summary.json")
    if not isinstance(summary, dict):
        return None, None
    state = run_state(summary)
    if state == "running" and "pid" in summary and summary.get("host") == socket.gethostname():
        return (f"run folder {str(path)!r} is in use by a run that is still going (process {summary['pid']} "
                f"on this host); wait for it to finish or stop it"), None
    if state == "running" and "pid" in summary:
        return None, (f"{path} was marked running by process {summary['pid']} on host {summary.get('host')!r}, "
                      "which cannot be checked from here; taking it over")
    if state == "interrupted":
        return None, f"resuming the interrupted run in {path}"
    return None, None


def read_summary(path: Path) -> dict[str, Any]:
    """``path/summary.json`` as a dict; one-line errors for a missing, damaged or non-object file."""
    summary = path / "summary.json"
    if not summary.is_file():
        raise ProbeError(f"{str(path)!r} is not a probe run directory: it has no summary.json")
    data = read_json(summary)
    if not isinstance(data, dict):
        raise ProbeError(f"{str(summary)!r} is not valid JSON holding an object (truncated or damaged?); "
                         "run the run again with probe run")
    return data


class Run:
    """A finished (or failed) run directory, for notebooks and ``probe compare``.

    ``run.summary`` is ``summary.json`` as a dict; ``run.status`` the status to believe (``interrupted``
    for a ``running`` run whose process is gone); ``run.table("probing")`` reads
    ``tables/probing.csv`` as a DataFrame; ``run.tables`` lists the names.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.summary: dict[str, Any] = read_summary(self.path)

    @property
    def status(self) -> str:
        return run_state(self.summary)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def tables(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "tables").glob("*.csv"))

    def table(self, name: str) -> pd.DataFrame:
        path = self.path / "tables" / f"{name}.csv"
        if not path.is_file():
            raise ProbeError(f"run {str(self.path)!r} has no table {name!r}; it has: {', '.join(self.tables) or 'none'}")
        return read_table(path)

    @property
    def report_path(self) -> Path:
        return self.path / "index.html"

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def _repr_html_(self) -> str:
        import html

        verdicts = "".join(f"<li>{html.escape(f.get('verdict', ''))}</li>" for f in self.summary.get("features", []))
        return (f"<b>probe run</b> {html.escape(str(self.path))} ({html.escape(self.status)})"
                f"<ul>{verdicts}</ul>")


def load_run(path: str | Path) -> Run:
    """Open a run directory written by :func:`probe.run`."""
    return Run(path)
