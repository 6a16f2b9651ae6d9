"""Tiny random causal LMs (the minilm tokenizer's vocabulary) for the label-word tests, and a saved folder of one."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

V = 30522
CONFIGS = {
    "gpt2": lambda: GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=128, pad_token_id=0,
                               bos_token_id=101, eos_token_id=102),
    "llama": lambda: LlamaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=32, pad_token_id=0),
    "qwen2": lambda: Qwen2Config(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=32, pad_token_id=0),
}


def tiny_lm(family: str, seed: int = 0):
    """A random causal LM of ``family`` (a key of :data:`CONFIGS`), seeded, in eval mode."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()


def save_tiny_lm(family: str, folder, tok) -> str:
    """A tiny LM and the tokenizer saved in ``folder`` (a causal-LM folder as a user would have it)."""
    tiny_lm(family).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
