"""The experiment config: its validated sections (:mod:`probe.config.sections`) and how a config is
loaded from YAML, a dict or the built-in default, with ``--set`` overrides and one-line errors
(:mod:`probe.config.loading`); :mod:`probe.config.training` has the model stages' sections, :mod:`probe.config.measurement` the analyses', causal tests' and discovery's. ``default.yaml`` here is the built-in default (``examples/default.yaml``)."""

from probe.config.loading import (DEFAULT_CONFIG_NAME, apply_overrides, default_config_text, dump_config, load_config,
                                  parse_override, variant_configs)
from probe.config.base import stable_hash
from probe.config.measurement import AnalysesConfig, CausalConfig, DiscoverConfig
from probe.config.sections import Config, ModelConfig, PlantedFeature, SpuriousFeature, TaskConfig, Variant
from probe.config.training import (AdversarialSection, AugmentationSection, BackTranslation, ComputeConfig,
                                   ContextualReplacement, FinetuneConfig, LoraSection, PretrainArtifact, PretrainConfig,
                                   ScratchSize, SynonymReplacement)

__all__ = [
    "AdversarialSection", "AnalysesConfig", "AugmentationSection", "BackTranslation", "CausalConfig", "ComputeConfig",
    "Config", "ContextualReplacement", "DEFAULT_CONFIG_NAME", "DiscoverConfig", "FinetuneConfig", "LoraSection", "ModelConfig",
    "PlantedFeature", "PretrainArtifact", "PretrainConfig", "ScratchSize", "SpuriousFeature", "SynonymReplacement",
    "TaskConfig", "Variant", "apply_overrides", "default_config_text", "dump_config", "load_config", "parse_override",
    "stable_hash", "variant_configs"
]
