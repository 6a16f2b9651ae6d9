"""One place that knows where things are inside a transformers model, for every supported architecture.

Every hook, layer swap, re-initialisation, head ablation and pooling asks a :class:`ModelAdapter`;
no other module names an architecture's attributes (docs/architecture.md, "Model adapter").

Layer ``l`` is what ``output_hidden_states`` calls ``hidden_states[l]`` (docs/design.md §2): 0 is
the embedding output and ``l`` the output of block ``l``. Which *module* produces that tensor
differs by architecture, and for pre-norm decoders the last one is the final norm, not the last
block (transformers records ``norm(block L output)`` as ``hidden_states[L]``)::

    layout     models                          hidden_states[0]            blocks           attention output      final
    bert       BERT, RoBERTa, ELECTRA, MiniLM  embeddings (ELECTRA:        encoder.layer    attention.output      -
                                               embeddings_project)                          .dense
    distilbert DistilBERT                      embeddings                  transformer      attention.out_lin     -
                                                                           .layer
    gpt2       GPT-2                           drop (wte + wpe)            h                attn.c_proj (Conv1D)  ln_f
    llama      Llama, Qwen2, Mistral, ...      embed_tokens                layers           self_attn.o_proj      norm

Bidirectional encoders pool a sequence by the mean over its real tokens; causal decoders by the
hidden state at the last real token, which is what their classification head reads (a causal
model's earlier positions never see the end of the text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from probe.errors import ProbeError


class UnsupportedModel(ProbeError, ValueError):
    """A model whose layout the adapter does not know (a one-line message naming what is missing)."""


@dataclass(frozen=True)
class Layout:
    """Where the parts of one family of architectures are, relative to its base model."""

    name: str
    model_types: tuple[str, ...]
    embeddings: tuple[str, ...]  # candidates, first present wins: the module whose output is hidden_states[0]
    blocks: str
    attention_output: str  # inside a block: the projection whose input is the concatenated head contexts
    final_norm: str | None  # applied after the last block and recorded as hidden_states[L]
    causal: bool
    lora_targets: tuple[str, ...]  # default LoRA target modules (Hu et al. 2022: query and value)
    embedding_parts: tuple[str, ...]  # the modules holding the embedding weights (what a swap copies)


LAYOUTS: tuple[Layout, ...] = (
    Layout("bert", ("bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet"),
           ("embeddings_project", "embeddings"), "encoder.layer", "attention.output.dense", None, False,
           ("query", "value"), ("embeddings", "embeddings_project")),
    Layout("distilbert", ("distilbert",), ("embeddings",), "transformer.layer", "attention.out_lin", None, False,
           ("q_lin", "v_lin"), ("embeddings",)),
    Layout("gpt2", ("gpt2",), ("drop",), "h", "attn.c_proj", "ln_f", True, ("c_attn",), ("wte", "wpe")),
    Layout("llama", ("llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "olmo", "phi3"), ("embed_tokens",),
           "layers", "self_attn.o_proj", "norm", True, ("q_proj", "v_proj"), ("embed_tokens",)),
)
SUPPORTED = "BERT, RoBERTa, DistilBERT, ELECTRA, GPT-2, Llama, Qwen2, Mistral"


def _get(module: nn.Module, path: str) -> nn.Module | None:
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def base_model_of(model: nn.Module) -> nn.Module:
    """The transformer inside ``model``: a classifier's ``base_model``, an ``AutoModel`` itself, or the
    encoder of a :class:`~probe.models.probe_head.ProbeHeadClassifier` (its ``base_model``)."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def _layout_for(base: nn.Module) -> Layout:
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    known = next((lay for lay in LAYOUTS if model_type in lay.model_types), None)
    if known is not None:
        return known
    for lay in LAYOUTS:  # an unknown model type laid out like a known family
        if isinstance(_get(base, lay.blocks), nn.ModuleList) and any(_get(base, e) for e in lay.embeddings):
            return lay
    looked = "; ".join(f"{lay.blocks} ({lay.name})" for lay in LAYOUTS)
    raise UnsupportedModel(
        f"{type(base).__name__} (model_type {model_type!r}): cannot find its transformer blocks; looked for {looked}. "
        f"Supported: {SUPPORTED}-style models")


class ModelAdapter:
    """The parts of one loaded model: embeddings, blocks, attention projections, heads, pooling.

    ``ModelAdapter(model)`` accepts a classifier (``...ForSequenceClassification`` /
    ``...ForTokenClassification``), a bare ``AutoModel`` or a probe head. Unknown layouts raise
    :class:`UnsupportedModel`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = base_model_of(model)
        self.layout = _layout_for(self.base)
        self.config = self.base.config
        blocks = _get(self.base, self.layout.blocks)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise UnsupportedModel(f"{type(self.base).__name__}: expected a list of blocks at "
                                   f"{self.layout.blocks!r} ({self.layout.name} layout)")
        self.blocks: nn.ModuleList = blocks
        emb = next((m for m in (_get(self.base, e) for e in self.layout.embeddings) if m is not None), None)
        if emb is None:
            raise UnsupportedModel(f"{type(self.base).__name__}: no embedding module at "
                                   f"{' or '.join(self.layout.embeddings)} ({self.layout.name} layout)")
        self.embedding_output: nn.Module = emb
        self.final_norm: nn.Module | None = (_get(self.base, self.layout.final_norm)
                                             if self.layout.final_norm else None)

    # --- structure ------------------------------------------------------------------------------

    @property
    def family(self) -> str:
        """The model type of the config (``bert``, ``gpt2``, ``qwen2``, ...)."""
        return str(getattr(self.config, "model_type", self.layout.name))

    @property
    def causal(self) -> bool:
        """Whether the model attends only to the left (a decoder)."""
        return self.layout.causal

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_layers(self) -> int:
        """Hidden states the model returns: blocks + 1 (the embedding output)."""
        return len(self.blocks) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.n_blocks:
            raise ValueError(
                f"layer {layer!r} is out of range: allowed 0..{self.n_blocks} "
                f"(0 = embeddings output, l = output of block l; this model has {self.n_blocks} blocks)")
        return layer

    def layer_module(self, layer: int) -> nn.Module:
        """The module whose output is ``hidden_states[layer]``: the embedding output for 0, block
        ``layer`` otherwise, and for the last layer of a pre-norm decoder its final norm."""
        self.check_layer(layer)
        if layer == 0:
            return self.embedding_output
        if layer == self.n_blocks and self.final_norm is not None:
            return self.final_norm
        return self.blocks[layer - 1]

    def word_embeddings(self) -> nn.Module:
        """The token-embedding table (what ``get_input_embeddings`` returns)."""
        return self.base.get_input_embeddings()

    def embedding_parts(self) -> list[nn.Module]:
        """The modules holding the embedding weights (token, position, type embeddings and their norm)."""
        return [m for m in (_get(self.base, p) for p in self.layout.embedding_parts) if m is not None]

    def encoder_parts(self) -> list[nn.Module]:
        """Everything between the input ids and the head: embeddings, blocks, and a final norm."""
        return self.embedding_parts() + list(self.blocks) + ([self.final_norm] if self.final_norm is not None else [])

    def attention_output(self, block: int) -> nn.Module:
        """Block ``block``'s attention output projection (``nn.Linear``, or GPT-2's ``Conv1D``)."""
        proj = _get(self.blocks[block], self.layout.attention_output)
        if proj is None or getattr(proj, "weight", None) is None:
            raise UnsupportedModel(f"{type(self.blocks[block]).__name__}: no attention output projection at "
                                   f"{self.layout.attention_output!r}")
        return proj

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        """Width of one head's slice of the attention output projection's input."""
        proj = self.attention_output(0)
        width = proj.in_features if isinstance(proj, nn.Linear) else proj.weight.shape[0]  # Conv1D: [in, out]
        return int(width) // self.n_heads

    def head_output(self) -> nn.Linear:
        """The classification head's output layer (``classifier``, ``classifier.out_proj``, ``score``):
        the last linear layer outside the transformer with one output per label."""
        inside = {id(m) for m in self.base.modules()}
        n = int(getattr(self.model.config, "num_labels", 0))
        found = [m for m in self.model.modules()
                 if isinstance(m, nn.Linear) and id(m) not in inside and m.out_features == n]
        if not found:
            raise UnsupportedModel(f"{type(self.model).__name__}: no classification head with {n} outputs")
        return found[-1]

    # --- initialisation -------------------------------------------------------------------------

    @property
    def initializer_range(self) -> float:
        return float(getattr(self.config, "initializer_range", None) or 0.02)

    @torch.no_grad()
    def reinit_block(self, block: int, generator: torch.Generator) -> None:
        """Block ``block`` re-drawn as ``PreTrainedModel._init_weights`` would, from ``generator`` (CPU).

        Linear / Conv1D / Embedding weights ~ N(0, initializer_range) (GPT-2's residual projections
        ``c_proj``: divided by sqrt(2 · layers), Radford et al. 2019), biases 0, norm weights 1 and
        biases 0. Re-implemented rather than called: in transformers 5 the init functions skip tensors
        that ``from_pretrained`` flagged as initialised, and they draw from the global generator.
        A parameter no rule covers raises ``ValueError``.
        """
        std = self.initializer_range
        scaled = std / math.sqrt(2 * self.n_blocks) if self.layout.name == "gpt2" else std
        target = self.blocks[block]
        done: set[int] = set()
        for name, module in target.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D" or isinstance(module, nn.Embedding):
                s = scaled if name.endswith("c_proj") else std
                weight.copy_(torch.empty(weight.shape, dtype=torch.float32).normal_(0.0, s, generator=generator))
                done.add(id(weight))
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    weight[module.padding_idx].zero_()
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
                    done.add(id(module.bias))
            elif _is_norm(module):
                if weight is not None:
                    weight.fill_(1.0)
                    done.add(id(weight))
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
                    done.add(id(module.bias))
        missed = [n for n, p in target.named_parameters() if id(p) not in done]
        if missed:
            raise ValueError(f"reinit: no initialisation rule for parameters {missed[:3]}")

    # --- pooling and padding --------------------------------------------------------------------

    @property
    def pooling(self) -> str:
        """``"last"`` (the last real token) for causal decoders, ``"mean"`` over real tokens otherwise."""
        return "last" if self.causal else "mean"

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``[batch, seq, d] -> [batch, d]`` by :attr:`pooling` (either padding side)."""
        return pool(hidden, attention_mask, self.pooling)

    @property
    def lora_targets(self) -> list[str]:
        return list(self.layout.lora_targets)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """Mean over real tokens (``how="mean"``) or the hidden state at the last real token (``"last"``)."""
    if how == "last":
        if attention_mask is None:
            return hidden[:, -1]
        last = (attention_mask.long() * torch.arange(attention_mask.shape[1], device=hidden.device)).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or "LayerNorm" in name or "RMSNorm" in name


def adapter(model: nn.Module) -> ModelAdapter:
    """The :class:`ModelAdapter` of ``model`` (a new one each call; it holds no state of its own)."""
    return ModelAdapter(model)


def ensure_pad_token(tokenizer, model: nn.Module | None = None):
    """Give a tokenizer without a pad token one the model knows, and tell the model.

    Decoder tokenizers (GPT-2, Llama) often have no pad token; batching needs one and a sequence
    classifier needs ``config.pad_token_id`` to find each row's last real token. The model's own
    ``pad_token_id`` is used when it has one, else the EOS token. Returns the tokenizer.
    """
    config = getattr(base_model_of(model), "config", None) if model is not None else None
    if tokenizer.pad_token_id is None:
        pad_id = getattr(config, "pad_token_id", None) if config is not None else None
        if pad_id is not None and pad_id < len(tokenizer):
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad_id))
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            raise ProbeError("tokenizer: it has neither a pad token nor an EOS token to pad with; add one")
    for cfg in {id(c): c for c in (config, getattr(model, "config", None)) if c is not None}.values():
        if getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = tokenizer.pad_token_id
    return tokenizer
