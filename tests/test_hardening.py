"""Hardening, round three (issue #29): a refused or failed rerun leaves a finished run byte for byte as
it was, runs take their folder with a lock, overwrite removes only what probe wrote, checkpoints without
a head or with truncated weights are refused in one line, discovery survives a band without controls
and an analysis that raises, the report says which tables are missing, files honour the umask, and
ambiguous columns are refused. Each test fails on 93ab4ca."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

import probe
from probe.errors import ProbeError
from tests.conftest import TINY

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
FAST = {**TINY, "analyses.attribution": False, "analyses.mdl": False, "analyses.similarity": False,
        "analyses.invariance": False}
CLASSES = ["business", "entertainment", "politics", "sports", "tech"]


def _run(out: Path, name: str = "x", **more):
    over = {**FAST, "output_dir": str(out), "name": name, **more}
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def _refused(out: Path, name: str = "x", **more) -> str:
    with pytest.raises(ProbeError) as e:
        _run(out, name, **more)
    assert "\n" not in str(e.value)
    return str(e.value)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_kept(folder: Path, before: dict[str, bytes]) -> None:
    """Every file of the finished run is there with the same bytes; anything new is a cache entry."""
    after = _snapshot(folder)
    changed = [n for n, b in before.items() if after.get(n) != b]
    assert not changed, changed
    new = [n for n in after if n not in before]
    assert all(n.startswith(("cache/", "models/")) for n in new), new
    assert probe.load_run(folder).status == "complete"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run; tests copy it."""
    return _run(tmp_path_factory.mktemp("finished"), "done").path


@pytest.fixture
def copy(tmp_path, finished):
    shutil.copytree(finished, tmp_path / "x")
    return tmp_path / "x"


def _tiny_config(n_labels: int | None = None, labels: list[str] | None = None):
    from probe.models.backbones import BUILTIN_BACKBONES

    config = BUILTIN_BACKBONES["tiny-bert"].make_config()
    if labels is not None:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {c: i for i, c in enumerate(labels)}
    return config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny-bert checkpoints probe must refuse: a bare AutoModel, a classifier config over bare weights,
    a truncated classifier, a three-class classifier, an adapter whose base does not exist."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    AutoModel.from_config(_tiny_config()).save_pretrained(root / "bare")
    shutil.copytree(root / "bare", root / "no-head")
    config = json.loads((root / "no-head" / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={str(i): c for i, c in enumerate(CLASSES)},
                  label2id={c: i for i, c in enumerate(CLASSES)})
    (root / "no-head" / "config.json").write_text(json.dumps(config))
    AutoModelForSequenceClassification.from_config(_tiny_config(labels=CLASSES)).save_pretrained(root / "clf")
    shutil.copytree(root / "clf", root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    AutoModelForSequenceClassification.from_config(_tiny_config(labels=["a", "b", "c"])).save_pretrained(root / "three")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": str(root / "no-such-base")}))
    return {p.name: p for p in root.iterdir()}


def _given(path: Path, **more) -> dict:
    return {"model.finetuned": str(path), "model.backbone": "tiny-bert", "spurious": [], "causal.enabled": False,
            **more}


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --- Done when: every refusal kind into a finished run's folder leaves it byte for byte ------------

def test_every_refusal_into_a_finished_run_leaves_it_byte_identical(copy, checkpoints, tmp_path, monkeypatch):
    out = copy.parent
    before = _snapshot(copy)
    labels = ["business", "sports"]
    dup = _csv(tmp_path / "dup.csv", "text,text,label", [f"t{i},u{i},{labels[i % 2]}" for i in range(400)])
    texts = _csv(tmp_path / "texts.csv", "text,label", [f"text number {i},{labels[i % 2]}" for i in range(400)])
    refusals = {
        "bad config value": ({"finetune.epochs": 0}, "finetune.epochs"),
        "unknown dataset": ({"task.dataset": str(tmp_path / "missing.csv")}, "unknown dataset"),
        "duplicate column": ({"task.dataset": str(dup)}, "more than once"),
        "label column is the text": ({"task.dataset": str(texts), "task.label_column": "text"}, "not a label column"),
        "no classification head": (_given(checkpoints["bare"]), "without a classification head"),
        "head weights missing": (_given(checkpoints["no-head"]), "has no weights for classifier"),
        "truncated weights": (_given(checkpoints["truncated"]), "not a readable safetensors file"),
        "adapter base missing": (_given(checkpoints["adapter"]), "model.adapter_base"),
        "other label names": (_given(checkpoints["three"]), "model.labels"),
        "head of another size": (_given(checkpoints["three"], **{"model.labels": CLASSES}), "has 3 outputs"),
    }
    for what, (more, message) in refusals.items():
        assert message in _refused(out, **more), what
        _assert_kept(copy, before)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # cannot be imported
    assert "tracking: tensorboard" in _refused(out, tracking="tensorboard")
    _assert_kept(copy, before)
    monkeypatch.delitem(sys.modules, "tensorboard")
    lock = copy / ".probe.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    assert "in use by a run that is still going" in _refused(out)
    lock.unlink()
    _assert_kept(copy, before)


def test_a_rerun_that_fails_after_starting_puts_the_finished_run_back(copy, monkeypatch):
    """Item 1: the folder was reset before the failure; now what the finished run wrote comes back, the
    model it fine-tuned included (the rerun fine-tuned another one before failing)."""
    before = _snapshot(copy)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    import probe.engine.run  # noqa: F401 - the module (probe.engine exports a function of the same name)

    monkeypatch.setattr(sys.modules["probe.engine.run"], "write_seed_tables", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(copy.parent, **{"finetune.epochs": 2})
    _assert_kept(copy, before)
    assert not (copy / ".probe-previous").exists() and not (copy / ".probe.lock").exists()


def test_a_refused_tensorboard_rerun_keeps_the_report_tables_and_status(copy, monkeypatch):
    """Item 1, the issue's reproduction: ``--set tracking=tensorboard`` without tensorboard."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    _refused(copy.parent, tracking="tensorboard")
    assert (copy / "index.html").is_file() and (copy / "timings.json").is_file()
    assert (copy / "tables" / "behaviour.csv").is_file() and probe.load_run(copy).status == "complete"


# --- 2, 3, 7: checkpoints ---------------------------------------------------------------------------

def test_a_model_without_a_head_is_refused_in_one_line(tmp_path, checkpoints):
    assert "BertModel, a model without a classification head" in _refused(tmp_path, **_given(checkpoints["bare"]))
    msg = _refused(tmp_path, **_given(checkpoints["no-head"]))
    assert "no weights for classifier.bias, classifier.weight" in msg and "at random" in msg


def test_an_adapter_that_brings_no_head_onto_a_headless_base_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model

    from probe.models.checkpoints import _not_in_adapter

    AutoModel.from_config(_tiny_config()).save_pretrained(tmp_path / "base")
    missing = ["classifier.bias", "classifier.weight"]
    for task_type, name in ((None, "no-head"), ("SEQ_CLS", "with-head")):
        clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=5)
        lora = LoraConfig(r=2, target_modules=["query", "value"], task_type=task_type)
        get_peft_model(clf, lora).save_pretrained(tmp_path / name)
        config = json.loads((tmp_path / name / "adapter_config.json").read_text())
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({**config, "task_type": "SEQ_CLS"}))
    assert _not_in_adapter(missing, str(tmp_path / "with-head")) == []  # peft saved the trained head
    msg = _refused(tmp_path, **_given(tmp_path / "no-head"))
    assert "no weights for classifier.bias, classifier.weight" in msg


def test_truncated_safetensors_is_one_line_and_exit_2(tmp_path, checkpoints):
    res = subprocess.run([sys.executable, "-m", "probe", "diagnose", str(checkpoints["truncated"]), "--data", "bbc-news",
                          "--reference", "tiny-bert", "--set", "output_dir=out"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.safetensors' is not a readable safetensors file" in lines[0], res.stderr


def test_adapter_base_and_head_size_are_refused_before_the_folder_is_made(tmp_path, checkpoints):
    """Item 7: refused before any work, so no run folder (and no cache) appears."""
    assert "cannot read the config of" in _refused(tmp_path, "a", **_given(checkpoints["adapter"]))
    msg = _refused(tmp_path, "b", **_given(checkpoints["three"], **{"model.labels": CLASSES}))
    assert "has 3 outputs but the dataset has 5 labels" in msg
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- 4: discovery -----------------------------------------------------------------------------------

def _small_vocabulary(n: int, rng) -> tuple[list[str], np.ndarray]:
    """Every word belongs to one class: no word can be a control (|z| < 1 for every class)."""
    y = rng.integers(0, 2, n)
    words = [["apple", "pear"], ["stone", "rock"]]
    return [" ".join(rng.choice(words[c], 6)) for c in y], y


def _tiny_classifier():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(_tiny_config(labels=["a", "b"])).eval()


def test_a_candidate_without_control_words_is_inconclusive_with_the_reason(capsys):
    from probe import discover
    from probe.models.backbones import load_tokenizer

    rng = np.random.default_rng(0)
    (train, y_train), (test, y_test) = _small_vocabulary(200, rng), _small_vocabulary(100, rng)
    table = discover(_tiny_classifier(), load_tokenizer("tiny-bert"), train, y_train, test, y_test, ["a", "b"],
                     max_length=16, min_count=5, n_examples=40, bootstrap=100, properties=False, progress=True)
    tested = table[table.n_insert.notna()]
    assert len(tested) > 0 and (tested.verdict == "inconclusive").all()
    # words and bigrams have no control word; position templates neither a control template nor a word
    assert tested.note.str.contains("no control word|no control template or control word").all()
    err = capsys.readouterr().err
    # item 11: the planned edits and an estimate before the tests, then a progress bar
    words = tested.kind.isin(["word", "bigram"]).sum()
    assert f"discovery: {words} candidates to test, at most" in err and "texts/s" in err
    assert f"discovery: {len(tested) - words} property and template candidates to test by their edits" in err
    assert "discovery: causal tests" in err and "candidate" in err


def test_a_tagger_marker_without_control_words_is_inconclusive_with_the_reason():
    from transformers import AutoModelForTokenClassification

    from probe.tasks.tokens.tagging import Sentence
    from probe.tasks.tokens.markers import discover_markers
    from probe.models.backbones import load_tokenizer

    rng = np.random.default_rng(0)
    kinds = [("near", ["paris", "rome"], "loc"), ("with", ["bob", "ann"], "per")]
    sentences = []
    for i in range(300):
        marker, names, typ = kinds[i % 2]
        sentences.append(Sentence([marker, str(rng.choice(names))], ["O", f"B-{typ}"]))
    tags = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    torch.manual_seed(0)
    config = _tiny_config(labels=tags)
    tagger = AutoModelForTokenClassification.from_config(config).eval()
    table = discover_markers(tagger, load_tokenizer("tiny-bert"), sentences[:200], sentences[200:], tags,
                             max_length=16, min_count=5, n_examples=40, bootstrap=100)
    tested = table[table.n_insert.notna()]
    assert set(tested.feature) == {"near", "with"} and (tested.verdict == "inconclusive").all()
    # words and bigrams have no control word; position templates neither a control template nor a word
    assert tested.note.str.contains("no control word|no control template or control word").all()


def test_an_analysis_that_raises_is_recorded_and_the_rest_is_written(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("cannot reshape array of size 0")

    monkeypatch.setattr("probe.discovery.discover.discover", broken)
    run = _run(tmp_path, **{"discover.enabled": True, "discover.bootstrap": 100})
    assert run.complete and {"behaviour", "probing", "predictions"} <= set(run.tables)
    assert "discovery" not in run.tables
    (error,) = run.summary["analysis_errors"]
    assert error["analysis"] == "discovery" and error["seed"] == 0
    assert error["error"].startswith("ValueError: cannot reshape array of size 0 (at test_hardening.py:")
    assert any("discovery failed for seed 0" in w for w in run.summary["warnings"])
    assert "discovery failed for seed 0" in run.report_path.read_text()


# --- 5, 6: the folder's lock, overwrite -------------------------------------------------------------

def test_a_run_cannot_take_a_folder_another_run_holds(tmp_path):
    from probe.engine.folder import folder_lock

    folder = tmp_path / "held"
    with folder_lock(folder):
        holder = json.loads((folder / ".probe.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert "in use by a run that is still going" in _refused(tmp_path, "held")
        with pytest.raises(ProbeError, match="still going"):
            with folder_lock(folder):
                pass
    assert not folder.exists()  # made by the lock, left empty: removed again
    sleeper = subprocess.Popen([sys.executable, "-c", "pass"])
    sleeper.wait()
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / ".probe.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                                "started": time.time() - 5}))
    run = _run(tmp_path, "stale")  # a lock whose process is gone is taken over
    assert run.complete and not (run.path / ".probe.lock").exists()


def test_overwrite_and_reruns_keep_the_users_own_files(tmp_path):
    folder = tmp_path / "mine"
    mine = {"tables/my_results.csv": "a,b\n1,2\n", "tensorboard/events.out.tfevents.1.other": "events",
            "notes.txt": "keep"}
    for name, text in mine.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    run = _run(tmp_path, "mine", overwrite=True)
    assert run.complete and {n: (folder / n).read_text() for n in mine} == mine
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert "tables/behaviour.csv" in manifest and not any(n in manifest for n in mine)
    run = _run(tmp_path, "mine", **{"analyses.probing": False})  # a rerun removes its own stale tables only
    assert {n: (folder / n).read_text() for n in mine} == mine
    assert not (folder / "tables" / "probing.csv").exists() and run.complete


# --- 8: a report over missing or truncated tables -----------------------------------------------------

def test_report_says_which_tables_are_missing_or_truncated(copy):
    (copy / "tables" / "probing.csv").unlink()
    training = copy / "tables" / "predictions.csv"
    lines = training.read_text().splitlines(keepends=True)
    training.write_text("".join(lines[: len(lines) // 2]))
    res = subprocess.run([sys.executable, "-m", "probe", "report", str(copy)], env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    warning = [line for line in res.stderr.splitlines() if line.startswith("probe: warning:")]
    assert len(warning) == 1 and "tables/probing.csv (missing)" in warning[0]
    assert "tables/predictions.csv (changed since the run wrote it)" in warning[0]
    html = (copy / "index.html").read_text()
    assert "tables/probing.csv (missing)" in html


# --- 9: modes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_honour_the_umask(tmp_path, umask, mode):
    from probe.rundir import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == mode


# --- 10: ambiguous columns ----------------------------------------------------------------------------

def test_ambiguous_columns_are_refused(tmp_path):
    from probe.data.sources import load_text_classification

    dup = _csv(tmp_path / "dup.csv", "text,text,label", ["a b,c d,x", "e f,g h,y"])
    with pytest.raises(ProbeError, match="names the column 'text' more than once"):
        load_text_classification(str(dup), "text", "label")
    two = _csv(tmp_path / "two.csv", "text,label", ["a b,x", "e f,y"])
    with pytest.raises(ProbeError, match=r"'text' is also the text column"):
        load_text_classification(str(two), "text", "text")
    every = _csv(tmp_path / "every.csv", "text,id,label", [f"t {i},{i},{'xy'[i % 2]}" for i in range(20)])
    with pytest.raises(ProbeError, match=r"column 'id' has as many distinct values as rows \(20\)"):
        load_text_classification(str(every), "text", "id")
