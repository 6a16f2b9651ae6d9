"""Causal tests inside the fine-tuned model: concept erasure, amnesic controls, layer swaps and
head ablations (decodability is not use: Elazar et al. 2021, "Amnesic Probing")."""
