"""The run directory contract (docs/design.md §3): atomic writes, and :class:`Run` for reading one back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from probe.errors import ProbeError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    atomic_write_text(run_dir / "tables" / f"{name}.csv", df.to_csv(index=False, float_format="%.10g"))


class Run:
    """A finished (or failed) run directory, for notebooks and ``probe compare``.

    ``run.summary`` is ``summary.json`` as a dict; ``run.table("probing")`` reads
    ``tables/probing.csv`` as a DataFrame; ``run.tables`` lists the names.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        summary = self.path / "summary.json"
        if not summary.is_file():
            raise ProbeError(f"{str(self.path)!r} is not a probe run directory: it has no summary.json")
        try:
            self.summary: dict[str, Any] = json.loads(summary.read_text())
        except json.JSONDecodeError:
            raise ProbeError(f"{summary}: not valid JSON; the run may have been interrupted") from None

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

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
        return pd.read_csv(path)

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
