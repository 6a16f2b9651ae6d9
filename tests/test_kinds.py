"""The task-kind registry (probe.tasks): each kind package's facts, and what the rest of the code asks it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from probe.errors import ProbeError
from probe.tasks import (DEFAULT_KIND, KIND_PACKAGES, TASK_KINDS, check_dataset_kind, dataset_kind, kind_of_architecture,
                         kind_of_peft_task, kind_spec, kinds_of_architecture, task_kind)
from probe.tasks.spec import KindSpec


def test_every_package_registers_one_kind_whose_implementation_holds_its_spec():
    assert len(TASK_KINDS) == len(KIND_PACKAGES) >= 2
    assert DEFAULT_KIND == next(iter(TASK_KINDS))
    for package in KIND_PACKAGES:
        spec = importlib.import_module(package).SPEC
        assert TASK_KINDS[spec.name] is spec
        kind = task_kind(spec.name)
        assert kind.spec is spec and kind.name == spec.name and kind.model_noun == spec.model_noun
        assert kind.auto_class().__name__ == spec.auto_class
        assert spec.implementation.startswith(package + ".")


def test_the_registry_tells_kinds_apart_by_their_facts():
    for spec in TASK_KINDS.values():
        sharing = [s for s in TASK_KINDS.values() if s.architecture_suffix == spec.architecture_suffix]
        assert kinds_of_architecture(["Bert" + spec.architecture_suffix]) == sharing  # a pair classifier's head
        assert kind_of_architecture(["Bert" + spec.architecture_suffix]) is (spec if len(sharing) == 1 else None)
        assert kind_of_peft_task(spec.peft_task_type) is (spec if len(sharing) == 1 else None)
    assert kind_of_architecture(["BertModel"]) is None and kind_of_architecture([]) is None
    assert kind_of_peft_task("CAUSAL_LM") is None and kind_of_peft_task(None) is None


def test_kinds_sharing_a_head_are_not_told_apart_by_it(monkeypatch):
    """A classifier of text pairs is a sequence classifier: a checkpoint's class then names no single
    kind, and the config's task.type decides."""
    first = next(iter(TASK_KINDS.values()))
    twin = KindSpec(name="twin", implementation="x:Y", description="", model_noun="twin", auto_class=first.auto_class,
                    architecture_suffix=first.architecture_suffix, peft_task_type=first.peft_task_type)
    monkeypatch.setitem(TASK_KINDS, "twin", twin)
    arch = ["Bert" + first.architecture_suffix]
    assert kinds_of_architecture(arch)[0] is first and kinds_of_architecture(arch)[-1] is twin
    assert kind_of_architecture(arch) is None and kind_of_peft_task(first.peft_task_type) is None
    with pytest.raises(ProbeError, match="unknown; allowed: " + ", ".join(TASK_KINDS)):
        kind_spec("text-pairs-typo")


def test_every_builtin_dataset_is_made_for_one_kind():
    from probe.data.sources import BUILTIN_DATASETS

    for name in BUILTIN_DATASETS:
        owners = [s.name for s in TASK_KINDS.values() if name in s.datasets]
        assert len(owners) == 1, name
        assert dataset_kind(name).name == owners[0]
        check_dataset_kind(name, owners[0], "x")  # its own kind: no error
        for other in set(TASK_KINDS) - set(owners):
            with pytest.raises(ProbeError, match=f"is a {owners[0]} dataset, but task.type is {other}"):
                check_dataset_kind(name, other, "x")
    assert dataset_kind("my.csv") is None


def test_the_command_line_offers_the_registered_kinds_without_importing_torch():
    code = ("import sys, probe.cli, probe.config; probe.config.load_config(None, {}); "
            "p = probe.cli._parser(); import json; "
            "a = [x for x in p._subparsers._group_actions[0].choices['diagnose']._actions if x.dest == 'task_type'][0]; "
            "print(json.dumps([list(a.choices), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    choices, torch_loaded = json.loads(out.strip().splitlines()[-1])
    assert choices == list(TASK_KINDS) and not torch_loaded


def test_a_kinds_refusals_come_from_its_spec():
    from probe.config import load_config

    refusing = [s for s in TASK_KINDS.values() if s.decoder_refusal]
    assert refusing  # taggers refuse decoders
    for spec in TASK_KINDS.values():
        over = {"task.type": spec.name, "pretrain.enabled": True, "pretrain.objective": "clm"}
        if spec.decoder_refusal:
            with pytest.raises(ProbeError, match=f"{spec.name} with a decoder is not supported"):
                load_config(None, over)
        else:
            assert load_config(None, over).task.type == spec.name
    for spec in TASK_KINDS.values():
        for field, why in spec.augmentation_refusals:
            assert why
            assert spec.augmentation_refusal(field) == why
