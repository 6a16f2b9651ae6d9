"""The config sections of what a run measures and how precisely: `analyses:`, `causal:` and `discover:`
(README's config reference; definitions in docs/design.md)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from probe.config.base import Section


class AnalysesConfig(Section):
    """Which comparisons to run and how to put intervals on them."""

    probing: bool = True
    similarity: bool = True
    behaviour: bool = True
    prompt_format: bool = Field(
        True, description="model.head label-words: the pretrained and fine-tuned models under format variants of "
        "task.prompt (separators, spacing, casing, newlines, field order, label-word casing)")
    properties: Union[Literal["auto"], list[str]] = Field(
        "auto", description="natural properties to probe: 'auto' (all registered ones that vary on the "
        "data) or a list of names (`probe properties`)")
    probe_family: Literal["logistic", "mlp"] = "logistic"
    probe_C: Union[Literal["cv"], float] = Field(
        "cv", description="L2 strength of the probes, or 'cv' to choose it by cross-validation on the "
        "probe's training split")
    probe_max_iter: int = Field(2000, ge=10)
    control_tasks: bool = True
    mdl: bool = True
    cka_debiased: bool = True
    attribution: bool = True
    attribution_methods: list[Literal["integrated_gradients", "saliency", "input_x_gradient", "occlusion"]] = Field(
        default_factory=lambda: ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"])
    faithfulness_methods: list[Literal["integrated_gradients", "saliency", "input_x_gradient", "occlusion"]] = Field(
        default_factory=lambda: ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"],
        description="methods whose ERASER comprehensiveness / sufficiency is measured (each costs 20 forward "
        "passes per example; for pairs the first one 40 more, per side)")
    attribution_examples: int = Field(12, ge=2, le=10000, description="examples per partition (conflicting, "
                                      "aligned, clean) that are attributed, for each model")
    ig_steps: int = Field(32, ge=2, le=2000, description="integration steps of Layer Integrated Gradients "
                          "(precision: full)")
    precision: Literal["budget", "full"] = Field(
        "budget", description="'budget': measure attributions, layer swaps and the head scan in batches until "
        "their intervals are as narrow as the keys below say (docs/design.md §5, precision budgets); 'full': "
        "every example and step as configured")
    attribution_half_width: float = Field(0.1, gt=0.0, le=1.0, description="budget: attribute batches until "
                                          "the headline share's 95% interval is at most this either side")
    attribution_batch: int = Field(6, ge=2, le=10000, description="budget: examples attributed per batch "
                                   "(attribution_examples is the cap)")
    ig_steps_start: int = Field(32, ge=2, le=2000, description="budget: integration steps every example starts at")
    ig_steps_max: int = Field(128, ge=2, le=4000, description="budget: most integration steps (doubled per example "
                              "while its convergence delta is above ig_tolerance)")
    ig_tolerance: float = Field(0.05, gt=0.0, le=1.0, description="budget: largest relative convergence delta "
                                "|sum attr - (F(x) - F(b))| / |F(x) - F(b)| accepted")
    occlusion_top_words: int = Field(5, ge=1, le=10000, description="budget: occlusion scores each other method's "
                                     "top words, the planted token and a random control sample of the same size")
    invariance: bool = True
    invariance_examples: int = Field(200, ge=2, le=100000)
    bootstrap_samples: int = Field(1000, ge=100, le=100000)
    reliance_threshold: float = Field(
        0.05, ge=0.0, le=1.0,
        description="smallest reliance gap that matters; a verdict of reliance needs the "
        "gap's whole 95% interval above it",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="batch size for activation extraction")
    max_batch_tokens: int = Field(4096, ge=64, le=10_000_000, description="padded tokens one inference pass holds "
                                  "at most (extraction, predictions, attributions, causal tests); lower it for large "
                                  "models")
    word_pooling: Literal["first", "mean"] = Field(
        "first", description="token classification: a word's vector is its first subword's or the mean of its "
        "subwords'")
    max_probe_words: int = Field(4000, ge=100, le=10_000_000, description="token classification: words the "
                                 "word-level probes use at most (whole sentences, drawn at random)")

    @field_validator("probe_C")
    @classmethod
    def _positive_c(cls, v: str | float) -> str | float:
        if not isinstance(v, str) and v <= 0:
            raise ValueError(f"must be 'cv' or a number > 0, got {v}")
        return v

    @field_validator("properties")
    @classmethod
    def _known_properties(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            from probe.data.properties import available_properties

            known = available_properties()
            unknown = [p for p in v if p not in known]
            if unknown:
                raise ValueError(f"unknown properties {unknown}; allowed: 'auto' or a list of {', '.join(known)}")
        return v


class CausalConfig(Section):
    """Interventions inside the fine-tuned model (issue 5): concept erasure with a random-direction
    control, layer swaps / re-initialisation and attention-head ablation. Needs planted features."""

    enabled: bool = True
    layers: Union[Literal["all"], list[int]] = Field(
        "all", description="hidden-state layers to intervene on: 0 = embeddings, l = output of block l")
    methods: list[Literal["leace", "inlp"]] = Field(
        default_factory=lambda: ["leace"], description="erasure methods: 'leace' (Belrose et al. 2023) and/or "
        "'inlp' (Ravfogel et al. 2020); each adds one forward pass per layer, concept and control")
    concepts: list[Literal["position", "document"]] = Field(
        default_factory=lambda: ["position", "document"], description="'position': does this token "
        "position hold the planted token; 'document': does the text contain it, copied to every position")
    random_control: bool = Field(True, description="erase as many random directions at the same layer "
                                 "(amnesic control, Elazar et al. 2021)")
    activation_memory_mb: int = Field(1024, ge=1, le=10_000_000, description="token activations of every "
                                      "erased layer are held at once when they fit in this many MiB (float32), "
                                      "else extracted one layer at a time (one more pass over the texts per layer)")
    inlp_max_iterations: int = Field(10, ge=1, le=200, description="INLP: most nullspace projections")
    inlp_tolerance: float = Field(
        0.02, ge=0.0, le=0.5, description="INLP stops once a fresh probe's held-out accuracy is within this "
        "of the majority rate")
    layer_swap: bool = Field(True, description="swap each fine-tuned block for the pretrained one, and "
                             "re-initialise it; also the fine-tuned head on the pretrained encoder")
    head_ablation: bool = True
    top_heads: int = Field(5, ge=1, le=1000, description="heads listed (largest drop in s-only error)")
    interval_width: float = Field(0.2, gt=0.0, le=1.0, description="analyses.precision budget: layer swaps, "
                                  "head rows and the head scan read held-out batches until each condition's "
                                  "conflicting accuracy (scan: s-only error) has a 95% interval at most this wide")
    batch: int = Field(40, ge=2, le=1_000_000, description="analyses.precision budget: held-out pairs per batch "
                       "(about 32 conflicting ones in the default: two batches make the precise head scan's 64)")


class DiscoverConfig(Section):
    """Discovery of the shortcuts nobody planted (issue 15; docs/design.md §8): label-associated words,
    bigrams and property slices of the training data and words whose attribution fine-tuning amplified,
    each capped candidate tested by inserting and deleting it against frequency-matched control words."""

    enabled: Union[Literal["auto"], bool] = Field(
        "auto", description="'auto': on when the run has no planted spurious feature (or hide_planted is "
        "true); true / false")
    hide_planted: bool = Field(False, description="validation: discover as if the planted tokens were unknown "
                               "(false: they are always tested, and flagged as planted)")
    min_count: int = Field(20, ge=2, le=1_000_000, description="training examples a word or bigram must occur in")
    alpha: float = Field(0.01, gt=0.0, lt=1.0, description="Bonferroni level over every (feature, class) tested")
    max_candidates: int = Field(20, ge=1, le=1000, description="candidates given the causal test, most promising "
                                "first")
    n_examples: int = Field(150, ge=10, le=100_000, description="held-out examples per edit direction (and "
                            "attributed for the model candidates)")
    controls: int = Field(5, ge=1, le=100, description="frequency-matched control words per frequency band")
    q: float = Field(0.05, gt=0.0, lt=1.0, description="Benjamini-Hochberg false discovery rate")
    min_effect: float = Field(0.1, ge=0.0, le=1.0, description="a 'used' verdict needs the paired effect's "
                              "95% interval above this")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="bootstrap resamples and sign flips per test")
    seed: int = Field(0, ge=0)
    vocabulary: Union[Literal["auto"], bool] = Field(
        "auto", description="search the tokenizer's whole words for triggers the data may not contain (gradient "
        "ranking, insertion screen, causal test; taggers: a word before an entity); 'auto': on when diagnosing a "
        "given checkpoint (model.finetuned); true / false")
    vocabulary_k: int = Field(10, ge=1, le=10_000, description="vocabulary words per class screened by real "
                              "insertion, highest gradient estimate first")
    vocabulary_texts: int = Field(8, ge=1, le=10_000, description="held-out texts per class (taggers: entity "
                                  "spans per type) whose gradient ranks the vocabulary")
    vocabulary_screen: int = Field(8, ge=1, le=10_000, description="held-out texts per class (taggers: entity "
                                   "spans per type) each screened word is inserted into")
    vocabulary_tested: int = Field(1, ge=1, le=100, description="vocabulary words per class given the causal test "
                                   "(the best screened, if they override at least a quarter of the screen)")

    def active(self, n_planted: int) -> bool:
        """Whether a run with ``n_planted`` planted features runs discovery."""
        if self.enabled == "auto":
            return n_planted == 0 or self.hide_planted
        return bool(self.enabled)

    def vocabulary_on(self, given: bool) -> bool:
        """Whether discovery searches the vocabulary (``given``: the run diagnoses a given checkpoint)."""
        return given if self.vocabulary == "auto" else bool(self.vocabulary)
