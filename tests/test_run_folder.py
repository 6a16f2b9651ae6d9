"""The run folder under attack (issue #18): a rerun shows only what it computed, a foreign folder is not
overwritten, failed and killed runs say so (and readers tell them from live ones), damaged files give
one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import probe
from probe.config import load_config
from probe.engine.context import Timer
from probe.engine.run import run_lifecycle
from probe.errors import ProbeError
from probe.rundir import check_run_folder, load_run
from tests.conftest import TINY, tiny_overrides

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def probe_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def _one_line_error(res, message: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("probe: error: "), res.stderr
    assert message in lines[0], lines[0]


def _summary(path) -> dict:
    return json.loads((path / "summary.json").read_text())


# --- 1. a rerun shows exactly what it computed ---------------------------------------------------

def test_rerun_with_analyses_off_drops_their_tables_and_sections(tmp_path, tiny_run):
    shutil.copytree(tiny_run.path, tmp_path / "tiny")
    assert {"attribution", "attribution_words", "probing", "mdl", "cka"} <= set(load_run(tmp_path / "tiny").tables)
    off = {"analyses.attribution": False, "analyses.probing": False, "analyses.mdl": False,
           "analyses.similarity": False}
    over = tiny_overrides(tmp_path, "tiny", **off)
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    assert "finetune" in run.summary["reused_stages"]  # the same folder, resumed
    assert set(run.tables) == {"behaviour", "predictions", "training"}
    html = run.report_path.read_text()
    for stale in ("Attribution", "Probing", "Description length", "Representation similarity"):
        assert f"<h2>{stale}" not in html, stale
    assert "Behaviour" in html


# --- 3. a folder that is not a probe run is not overwritten ---------------------------------------

def test_non_empty_foreign_folder_is_refused_unless_overwrite(tmp_path):
    foreign = tmp_path / "out" / "mine"
    (foreign / "models" / "finetuned").mkdir(parents=True)
    files = {"models/finetuned/weights.bin": "precious", "index.html": "<p>my page</p>", "notes.txt": "keep"}
    for name, text in files.items():
        (foreign / name).write_text(text)
    res = probe_cli("run", "--set", "output_dir=out", "--set", "name=mine", cwd=tmp_path)
    _one_line_error(res, "is not empty and is not a probe run folder")
    assert "--overwrite" in res.stderr
    assert {n: (foreign / n).read_text() for n in files} == files and not (foreign / "summary.json").exists()
    assert check_run_folder(foreign, overwrite=True) == (None, None)
    assert check_run_folder(tmp_path / "new", overwrite=False) == (None, None)
    (tmp_path / "empty").mkdir()
    assert check_run_folder(tmp_path / "empty", overwrite=False) == (None, None)
    res = probe_cli("run", "--overwrite", "--print-config", cwd=tmp_path)
    assert res.returncode == 0 and "overwrite: true" in res.stdout
    assert load_config(None, {"overwrite": True}).hash() == load_config(None).hash()  # results do not change


def test_symlink_inside_a_run_folder_is_refused(tmp_path):
    run = tmp_path / "out" / "linked"
    (run / "models").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    (tmp_path / "elsewhere").mkdir()
    (run / "models" / "finetuned").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    res = probe_cli("run", "--set", "output_dir=out", "--set", "name=linked", cwd=tmp_path)
    _one_line_error(res, "models/finetuned is a symbolic link")
    assert _summary(run)["status"] == "failed"  # untouched


# --- 4. a failed run keeps a useful error ---------------------------------------------------------

def _lifecycle(tmp_path, stages, name="life"):
    config = load_config(None, {"output_dir": str(tmp_path), "name": name})
    return run_lifecycle(config, Timer(), time.perf_counter(), stages)


@pytest.mark.parametrize("exc, expected", [
    (ValueError("\nthe reason is on the second line"), r"ValueError: the reason is on the second line$"),
    (KeyError(), r"KeyError: \(no message\) at test_run_folder\.py:\d+ in stages$"),
])
def test_failed_run_records_a_useful_error(tmp_path, exc, expected):
    def stages(run_dir):
        raise exc

    with pytest.raises(type(exc)):
        _lifecycle(tmp_path, stages)
    summary = _summary(tmp_path / "life")
    assert summary["status"] == "failed" and re.match(expected, summary["error"]), summary["error"]


# --- 5. interrupted runs say so; readers tell them from live ones --------------------------------

def test_sigterm_is_recorded_like_ctrl_c(tmp_path):
    def stages(run_dir):
        running = _summary(run_dir)
        assert running["status"] == "running" and running["pid"] == os.getpid()
        assert running["host"] == socket.gethostname()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        _lifecycle(tmp_path, stages)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again
    summary = _summary(tmp_path / "life")
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"

    def ctrl_c(run_dir):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _lifecycle(tmp_path, ctrl_c)
    assert _summary(tmp_path / "life")["status"] == "interrupted"


def _start_tiny_run(tmp_path, name):
    args = [f"{k}={v}" for k, v in {**TINY, "output_dir": "out", "name": name}.items()]
    proc = subprocess.Popen([sys.executable, "-m", "probe", "run", "--quiet", *sum((["--set", a] for a in args), [])],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summary = tmp_path / "out" / name / "summary.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if summary.is_file() and json.loads(summary.read_text()).get("status") == "running":
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run never said it was running")


def test_killed_run_reads_as_interrupted_and_a_live_one_as_running(tmp_path):
    folder = tmp_path / "out" / "victim"
    proc = _start_tiny_run(tmp_path, "victim")
    try:
        assert load_run(folder).status == "running"
        problem, _ = check_run_folder(folder)
        assert problem and "still going" in problem and str(proc.pid) in problem  # the next probe run refuses
        res = probe_cli("report", str(folder), cwd=tmp_path)
        _one_line_error(res, "is not complete (status 'running'); it is still running")
    finally:
        proc.kill()
        proc.communicate()
    assert _summary(folder)["status"] == "running"  # SIGKILL: nothing could be written
    assert load_run(folder).status == "interrupted"
    assert check_run_folder(folder) == (None, f"resuming the interrupted run in {folder}")
    _one_line_error(probe_cli("report", str(folder), cwd=tmp_path), "(status 'interrupted')")
    _one_line_error(probe_cli("compare", str(folder), str(folder), cwd=tmp_path), "(status 'interrupted')")
    # a recorded pid that now belongs to a process started after the run is not the run
    s = {**_summary(folder), "pid": os.getpid(), "started": time.time() - 1e6}
    (folder / "summary.json").write_text(json.dumps(s))
    assert load_run(folder).status == "interrupted"


def test_sigterm_from_outside_marks_the_run_interrupted(tmp_path):
    proc = _start_tiny_run(tmp_path, "term")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "probe: interrupted" in err
    summary = _summary(tmp_path / "out" / "term")
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"


# --- 6. damaged files: one line, no traceback -----------------------------------------------------

def test_report_on_damaged_run_folders_is_one_line(tmp_path, tiny_run):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_run.path, truncated)
    text = (truncated / "summary.json").read_text()
    (truncated / "summary.json").write_text(text[: len(text) // 2])
    _one_line_error(probe_cli("report", str(truncated), cwd=tmp_path), "is not valid JSON")
    with pytest.raises(ProbeError, match="is not valid JSON"):
        load_run(truncated)
    bad_csv = tmp_path / "bad_csv"
    shutil.copytree(tiny_run.path, bad_csv)
    (bad_csv / "tables" / "cka.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    res = probe_cli("report", str(bad_csv), cwd=tmp_path)
    _one_line_error(res, "cka.csv' is not a readable CSV table")
    assert "Traceback" not in res.stderr
    with pytest.raises(ProbeError, match="is not a readable CSV table"):
        load_run(bad_csv).table("cka")
    (bad_csv / "tables" / "cka.csv").write_text("")
    _one_line_error(probe_cli("report", str(bad_csv), cwd=tmp_path), "cka.csv' is empty")
