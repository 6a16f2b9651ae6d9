"""A sweep (``compare:`` in the config): variants run into one folder, share the pretrained activations,
and end in a comparison report; a bad variant is refused before any work."""

import pytest

import probe
from probe.config import load_config, variant_configs
from probe.errors import ProbeError
from tests.conftest import TINY


def _sweep_config(tmp_path, variants):
    cfg = load_config(None, {**TINY, "output_dir": str(tmp_path), "name": "sweep", "analyses.probing": False,
                             "analyses.attribution": False, "analyses.invariance": False})
    data = cfg.to_dict()
    data["compare"] = variants
    return data


def test_sweep_runs_variants_shares_pretrained_activations_and_compares(tmp_path):
    sweep = probe.run(_sweep_config(tmp_path, [{"name": "full"},
                                               {"name": "frozen", "set": {"finetune.strategy": "linear_probe"}},
                                               {"name": "lora", "set": {"finetune.strategy": "lora"}},
                                               {"name": "cf", "set": {"finetune.augmentation.counterfactual_rate": 0.5,
                                                                      "finetune.adversarial.method": "fgm"}}]),
                      progress=False)
    assert [r.path.name for r in sweep.runs] == ["full", "frozen", "lora", "cf"]
    assert all(r.summary["status"] == "complete" for r in sweep.runs)
    assert "extract:pretrained" not in sweep.runs[0].summary["reused_stages"]
    assert "extract:pretrained" in sweep.runs[1].summary["reused_stages"]  # computed once, in shared/
    assert list((tmp_path / "sweep" / "shared" / "cache").glob("activations-pretrained-*.npz"))
    table = sweep.comparison.set_index("variant")
    assert list(table.index) == ["full", "frozen", "lora", "cf"]
    assert (tmp_path / "sweep" / "lora" / "models" / "finetuned" / "adapter_model.safetensors").is_file()
    assert table.loc["frozen", "strategy"] == "linear_probe"
    assert table.loc["frozen", "trainable_parameters"] < table.loc["full", "trainable_parameters"] / 10
    assert (tmp_path / "sweep" / "comparison.csv").is_file() and sweep.report_path.is_file()


def test_bad_variant_is_refused_before_any_work(tmp_path):
    data = _sweep_config(tmp_path, [{"name": "ok"}, {"name": "bad", "set": {"finetune.strategy": "adapter"}}])
    with pytest.raises(ProbeError, match="compare variant 'bad'.*finetune.strategy"):
        probe.run(data, progress=False)
    assert not (tmp_path / "sweep" / "ok").exists()
    with pytest.raises(ProbeError, match="distinct names"):
        load_config(_sweep_config(tmp_path, [{"name": "a"}, {"name": "a"}]))
    with pytest.raises(ProbeError, match="cannot override"):
        load_config(_sweep_config(tmp_path, [{"name": "a", "set": {"output_dir": "x"}}]))
    assert [c.name for c in variant_configs(load_config(_sweep_config(tmp_path, [{"name": "a"}])))] == ["a"]
