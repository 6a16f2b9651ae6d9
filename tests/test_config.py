from pathlib import Path

import pytest
import yaml

from probe.config import Config, apply_overrides, load_config, parse_override
from probe.errors import ProbeError

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_examples_default():
    assert load_config(None) == load_config(ROOT / "examples" / "default.yaml")


def test_control_differs_only_in_rates_and_name():
    d, c = load_config(None).to_dict(), load_config(ROOT / "examples" / "control.yaml").to_dict()
    assert c["spurious"][0]["rate_in_class"] == c["spurious"][0]["rate_outside"] == 0.5
    d["name"] = c["name"]
    d["spurious"][0].update(rate_in_class=0.5, rate_outside=0.5)
    assert d == c


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["finetune.epochs=2", "spurious.0.token=kiwi", "finetune.learning_rate=1e-4"])
    assert cfg.finetune.epochs == 2 and cfg.spurious[0].token == "kiwi"
    assert cfg.finetune.learning_rate == pytest.approx(1e-4)
    assert parse_override("a.b=true") == ("a.b", True)
    assert apply_overrides({"a": {"b": 1}}, {"a__c": 2}) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["task.datset=x"], "task.datset: unknown key; allowed keys here: type, dataset, text_column"),
        (["finetune.epochs=many"], "finetune.epochs: got 'many'"),
        (["spurious.0.rate_in_class=1.5"], "spurious.0.rate_in_class: got 1.5: Input should be less than or equal to 1"),
        (["spurious.0.rate_outside=-0.1"], "spurious.0.rate_outside: got -0.1"),
        (["task.test_size=0"], "task.test_size: got 0"),
        (["task.test_size=1.5"], "task.test_size: got 1.5"),
        (["spurious.0.token=two words"], "spurious.0.token: got 'two words': must be a single word"),
        (["name=../escape"], "name: got '../escape'"),
        (["spurious.3.token=x"], "'3' is not an index of spurious"),
        (["bogus"], "must look like section.key=value"),
    ],
)
def test_bad_values_are_refused_with_field_value_and_allowed(overrides, expected):
    with pytest.raises(ProbeError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_bad_yaml_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ProbeError, match="is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    with pytest.raises(ProbeError, match="not valid YAML at line"):
        load_config(broken)
    with pytest.raises(ProbeError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_hash_ignores_output_dir_but_not_seed():
    a = load_config(None)
    assert a.hash() == load_config(None, {"output_dir": "elsewhere"}).hash()
    assert a.hash() != load_config(None, {"seed": 1}).hash()


def test_resolved_config_round_trips():
    cfg = load_config(None)
    assert Config.model_validate(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    from probe.config import variant_configs

    config = load_config(path)
    if config.compare:
        assert len(variant_configs(config)) == len(config.compare)


def test_config_file_that_is_not_utf8_is_refused(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ProbeError, match=r"config file .*latin1.yaml' is not UTF-8 text \(byte 9: b'\\xe9'\); "
                                         r"allowed: a YAML file saved as UTF-8"):
        load_config(latin)


def test_overwrite_and_max_dropped_share_are_config_keys():
    assert load_config(None).overwrite is False and load_config(None).task.max_dropped_share == 0.1
    assert load_config(None, ["overwrite=true", "task.max_dropped_share=0.5"]).overwrite is True
    with pytest.raises(ProbeError, match=r"task.max_dropped_share: got 1.5"):
        load_config(None, {"task.max_dropped_share": 1.5})
