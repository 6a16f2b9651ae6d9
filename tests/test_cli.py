"""The command line: bad input exits non-zero with one line and no traceback; --help is instant."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def probe_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


@pytest.fixture
def files(tmp_path):
    good = pd.DataFrame({"text": [f"text number {i}" for i in range(30)], "label": ["a", "b", "c"] * 10,
                         "n": range(30)})
    good.to_csv(tmp_path / "good.csv", index=False)
    good.assign(label="a").to_csv(tmp_path / "oneclass.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "typo.yaml").write_text("task:\n  datset: bbc-news\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    return tmp_path


CASES = [
    (["--set", "task.dataset=no-such-data"], "unknown dataset 'no-such-data'"),
    (["--set", "task.dataset=good.csv", "--set", "task.text_column=body"], "column 'body' is not in"),
    (["--set", "task.dataset=oneclass.csv"], "has a single class 'a'"),
    (["--set", "task.dataset=empty.csv"], "is empty"),
    (["--set", "task.dataset=good.csv", "--set", "task.text_column=n"], "holds non-text values"),
    (["typo.yaml"], "task.datset: unknown key"),
    (["--set", "spurious.0.target_class=sport"], "'sport' is not a class of 'bbc-news'"),
    (["--set", "task.test_size=99999"], "larger than the dataset"),
    (["--set", "model.backbone=/no/such/model"], "model.backbone: cannot load '/no/such/model'"),
    (["latin1.yaml"], "is not UTF-8 text"),
    (["--set", 'spurious.0.token="[MASK]"'], "spurious.0.token: got '[MASK]': the tokenizer turns it into its "
                                              "special token '[MASK]'"),
    (["--set", "spurious.0.token=\u200b"], "spurious.0.token: got '\\u200b': the tokenizer turns it into no tokens"),
]


@pytest.mark.parametrize("args, message", CASES)
def test_bad_input_one_line_no_traceback_nothing_complete(files, args, message):
    res = probe_cli("run", *args, "--set", "output_dir=out", cwd=files)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("probe: error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr
    summaries = list((files / "out").glob("*/summary.json")) if (files / "out").exists() else []
    assert all(json.loads(p.read_text())["status"] != "complete" for p in summaries)


def test_help_does_not_import_torch():
    code = "import sys, probe.cli as c; c._parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert out.stdout.strip() == "False"


def test_listing_and_print_config(tmp_path):
    res = probe_cli("datasets", cwd=tmp_path)
    assert res.returncode == 0 and "bbc-news" in res.stdout and "wnut16" in res.stdout
    res = probe_cli("properties", cwd=tmp_path)
    assert res.returncode == 0 and "length_bucket" in res.stdout and "has_mention" in res.stdout
    res = probe_cli("models", cwd=tmp_path)
    assert res.returncode == 0 and "minilm" in res.stdout and "tiny-bert" in res.stdout
    res = probe_cli("run", "--print-config", "--set", "finetune.epochs=7", cwd=tmp_path)
    assert res.returncode == 0 and "epochs: 7" in res.stdout
    res = probe_cli("report", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "not a probe run directory" in res.stderr
