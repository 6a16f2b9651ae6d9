"""The report is self-contained and renders untrusted dataset text inert."""

import re

import pandas as pd

import probe
from tests.conftest import tiny_overrides

EVIL_LABEL = '<script>alert("label")</script>'


def test_markup_in_data_renders_inert(tmp_path):
    texts = [f'<img src=x onerror=alert({i})> story <b>{i}</b> <script>alert("t")</script> word{i % 7}'
             for i in range(120)]
    labels = [EVIL_LABEL if i % 2 else "plain & simple" for i in range(120)]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "evil.csv", index=False)
    over = tiny_overrides(tmp_path, "evil", **{
        "task.dataset": str(tmp_path / "evil.csv"), "task.train_size": 60, "task.validation_size": 20,
        "task.test_size": 40, "spurious.0.target_class": EVIL_LABEL})
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    html = (run.path / "index.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;label&#34;)&lt;/script&gt;" in html
    assert "plain &amp; simple" in html
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', html))
    assert "<link" not in html and "@import" not in html
