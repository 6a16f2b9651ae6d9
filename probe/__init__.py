"""probe: did a fine-tuned transformer learn its task, or a task-irrelevant shortcut?

Public API (heavy libraries are imported only when a function runs)::

    import probe
    run = probe.run("examples/default.yaml", finetune__epochs=1)
    run.summary["verdict"], run.table("probing")
    probe.load_run("reports/default")
    probe.linear_cka(X, Y)
    probe.compare(["reports/full", "reports/lora"])              # one row per run: reliance vs cost
    with probe.erase(model, 3, (token_acts, concept_labels)):   # LEACE through a forward hook
        ...
    with probe.swap_layers(model, pretrained_encoder, [5]):      # pretrained block 5 in place
        ...
    probe.extract_words(tagger, tokenizer, sentences, 64, 32, device)  # one vector per word, every layer
    probe.tag_attributions(tagger, tokenizer, sentences, positions)    # what a word's predicted tag looks at
    probe.entity_scores(gold_tags, predicted_tags)                     # seqeval entity P / R / F1
    probe.discover(model, tokenizer, train_texts, train_labels, test_texts, test_labels, classes,
                   reference=pretrained_encoder)                       # shortcuts nobody planted
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["run", "load_run", "load_config", "render_report", "linear_cka", "cka_matrix", "online_codelength",
           "relative_extractability", "selectivity", "control_labels", "erase", "swap_layers", "token_activations",
           "compare", "extract_words", "token_probe_table", "tag_attributions", "entity_scores", "discover", "ProbeError",
           "Run", "__version__"]

_LAZY = {
    "run": "probe.engine",
    "load_run": "probe.rundir",
    "Run": "probe.rundir",
    "load_config": "probe.config",
    "render_report": "probe.report.render",
    "linear_cka": "probe.analyses.similarity",
    "cka_matrix": "probe.analyses.similarity",
    "online_codelength": "probe.analyses.mdl",
    "relative_extractability": "probe.analyses.mdl",
    "selectivity": "probe.analyses.control_tasks",
    "control_labels": "probe.analyses.control_tasks",
    "erase": "probe.causal.experiment",
    "swap_layers": "probe.causal.ablation",
    "token_activations": "probe.causal.token_activations",
    "compare": "probe.comparison",
    "extract_words": "probe.tasks.tokens.extract",
    "token_probe_table": "probe.tasks.tokens.probing",
    "tag_attributions": "probe.tasks.tokens.attribution",
    "entity_scores": "probe.tasks.tokens.entities",
    "discover": "probe.discovery.discover",
    "ProbeError": "probe.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
