"""Human names and one-line definitions of the metrics and columns the report shows.

The CSV files in ``tables/`` keep the tidy machine names (``conflicting_accuracy_before``); the pages
show :func:`label` with :func:`definition` on hover and list every term they used in a glossary at
the end. Definitions follow docs/design.md §5 (and README's metric table): change them there first.
"""

from __future__ import annotations

#: machine name → (human name, short definition)
TERMS: dict[str, tuple[str, str]] = {
    # behaviour and reliance
    "clean_accuracy": ("clean accuracy", "accuracy on the held-out test split, no token inserted"),
    "task_accuracy": ("clean accuracy", "accuracy on the held-out test split, no token inserted"),
    "aligned_accuracy": ("aligned accuracy", "accuracy with the token inserted into test examples of its class"),
    "conflicting_accuracy": ("conflicting accuracy",
                             "accuracy with the token inserted into test examples of other classes"),
    "conflicting_accuracy_before": ("conflicting accuracy, before insertion",
                                    "accuracy of the same conflicting examples without the token"),
    "s_only_error": ("s-only error", "fraction of conflicting (s-only: the spurious token is their only cue to its "
                     "class) examples predicted as the token's class"),
    "reliance_gap": ("reliance gap", "accuracy of the conflicting examples before the token was inserted minus "
                     "after (the same examples, paired, so class difficulty cancels out)"),
    "format_accuracy": ("accuracy", "test accuracy of the model reading each text through this template variant"),
    "format_accuracy_change": ("accuracy change", "accuracy under the variant minus under the training template, "
                               "paired over the same texts"),
    "format_flip_rate": ("flip rate", "share of texts whose prediction differs from the training template's"),
    "format_spread": ("format spread", "largest minus smallest accuracy over the training template and its variants"),
    "flip_rate": ("flip rate", "fraction of counterfactual pairs whose prediction changes when the token is inserted"),
    "flip_rate_aligned": ("flip rate on removal",
                          "fraction of aligned examples whose prediction changes when the token is removed"),
    "removal_flip_rate": ("flip rate on removal",
                          "fraction of examples whose prediction changes when the token is removed"),
    "flip_to_target": ("flips to the token's class",
                       "conflicting examples not predicted as the token's class before insertion and predicted as "
                       "it after: the s-only error without the model's prior bias toward that class"),
    "change_rate": ("change rate", "invariance test: fraction of predictions that change under a task-irrelevant edit"),
    "accuracy_drop": ("accuracy drop", "invariance test: accuracy before the edit minus accuracy after it"),
    "identical_inputs": ("inputs left unchanged",
                         "invariance test: fraction of texts whose token ids the edit left unchanged"),
    "no_entity_rate": ("no-entity rate", "how often a plain word right after the marker is tagged with the "
                       "marker's entity type"),
    "f1": ("entity F1", "seqeval entity-level F1, micro over entity types, exact span and type"),
    "validation_accuracy": ("validation accuracy", "accuracy on the validation split after the epoch"),
    "validation_f1": ("validation F1", "entity-level F1 on the validation split after the epoch"),
    "train_loss": ("training loss", "mean cross-entropy over the epoch's training batches"),
    # task quality (scikit-learn's classification_report)
    "class": ("class", "the true class of the test examples in the row"),
    "true": ("true class", "rows: the examples' true class; columns: the class the model predicted"),
    "support": ("support", "test examples of the class (the n of its recall)"),
    "predicted": ("predicted", "test examples the model assigned to the class (the n of its precision)"),
    "precision": ("precision", "of the examples predicted as the class, the share that belong to it: TP / (TP + FP)"),
    "recall": ("recall", "of the examples of the class, the share predicted as it: TP / (TP + FN)"),
    "class_f1": ("F1", "harmonic mean of precision and recall: 2 TP / (2 TP + FP + FN)"),
    "confusion_matrix": ("confusion matrix", "counts of test examples by true class (rows) and predicted class "
                         "(columns); the diagonal is right"),
    "majority_rate": ("majority rate", "accuracy of always predicting the most frequent test class"),
    "s_only": ("s-only", "s for the spurious feature: examples in which the spurious token is the only cue to "
               "its class, i.e. conflicting examples"),
    "leace": ("LEACE", "LEAst-squares Concept Erasure (Belrose et al. 2023): the smallest edit of the "
              "activations after which no linear classifier can predict the concept better than a constant"),
    "inlp": ("INLP", "Iterative Null-space Projection (Ravfogel et al. 2020): repeatedly fit a linear probe "
             "for the concept and project its directions out until a fresh probe is near chance"),
    "random_control": ("random control", "as many random directions erased at the same layer (amnesic probing, "
                       "Elazar et al. 2021): what erasing any directions does"),
    "verdict_relies": ("relies", "verdict: the deciding number's whole 95 % interval lies above its threshold "
                       "(for discovered words: the insertion test passes the false-discovery control too)"),
    "verdict_none": ("no reliance", "verdict: the deciding number's whole 95 % interval lies below the threshold "
                     "and the model learned the task"),
    "verdict_inconclusive": ("inconclusive", "verdict: the interval straddles the threshold, too few examples, or "
                             "a model that never learned the task"),
    "verdict_relevant": ("used, plausibly task-relevant", "discovery verdict: deleting the word lowers the "
                         "probability of its class beyond controls, but inserting it does not override a text"),
    "uninformative": ("uninformative", "a natural property no probe predicts better than its majority value at "
                      "any layer: nothing to read either way"),
    "correlational": ("correlational only", "found by probing or by association in the data, not by an "
                      "intervention: decodable or associated, not shown to be used"),
    "reliance_threshold": ("reliance threshold", "analyses.reliance_threshold: the smallest effect that counts "
                           "as reliance (a verdict needs the whole 95 % interval on one side of it)"),
    "counterfactual_augmentation": ("counterfactual augmentation", "finetune.augmentation.counterfactual_rate: "
                                    "the planted token inserted into that share of the other classes' training "
                                    "examples, labels unchanged (Kaushik et al. 2020)"),
    # discovery (docs/design.md §8)
    "override_rate": ("override rate", "held-out examples not of class c, without the word and not predicted c: "
                      "the share predicted c after inserting the word once among the first five words"),
    "deletion_drop": ("deletion effect", "held-out examples containing the word: the mean drop of P(c) when "
                      "every occurrence is removed"),
    "n_insert": ("n inserted", "held-out texts of other classes the word was inserted into: the n of the override "
                 "rate"),
    "amplification": ("attribution amplification", "fine-tuned / pretrained attribution mass of the word relative "
                      "to its share of the words: how much more fine-tuning made the model look at it"),
    "q_value": ("q-value", "Benjamini–Hochberg adjusted p-value of the paired test against frequency-matched "
                "control words"),
    "z": ("z", "Gardner et al. 2021: (p̂ − p0) / sqrt(p0 (1 − p0) / n) for the word and class in the training split"),
    "reference_override_rate": ("reference override", "a trigger found by searching the vocabulary (from: "
                                "vocabulary): the pretrained reference's override rate for the same word, on "
                                "texts it does not predict as c"),
    # probing
    "accuracy": ("probe accuracy", "held-out accuracy of a logistic-regression probe on standardised pooled "
                 "activations of this layer"),
    "majority_baseline": ("majority baseline", "held-out accuracy of always predicting the label most frequent in "
                          "the probe's training half; below 0.5 on a two-valued property when that label is the "
                          "rarer one in the held-out half"),
    "control_accuracy": ("control accuracy", "probe accuracy on the control task (Hewitt & Liang 2019): each "
                         "type gets one random label from the property's label distribution"),
    "selectivity": ("selectivity", "probe accuracy minus control accuracy, same probe, same data"),
    "accuracy_difference": ("amplification", "fine-tuned minus pretrained probe accuracy on the same held-out "
                            "examples; positive: fine-tuning made the property more decodable"),
    "probe_C": ("probe C", "inverse regularisation strength chosen by cross-validation on the probe's training half"),
    "balanced_accuracy": ("balanced accuracy", "mean of the per-class recalls"),
    "type_overlap": ("type overlap", "fraction of held-out words whose type also occurs in the probe's training half"),
    # description length
    "codelength_bits": ("codelength (bits)", "online codelength of the labels given the layer (Voita & Titov "
                        "2020): shorter means easier to extract"),
    "control_codelength_bits": ("control codelength (bits)", "online codelength of the control-task labels"),
    "compression": ("compression", "uniform code / online codelength = n·log2 K / codelength"),
    "control_compression": ("control compression", "compression of the control-task labels"),
    "uniform_bits": ("uniform code (bits)", "n·log2 K: the labels sent with no model"),
    "relative_extractability": ("relative extractability", "codelength(spurious) / codelength(target class vs "
                                "rest) on balanced binary probes (Lovering et al. 2021); above 1, the target "
                                "is the easier feature"),
    "codelength_target_bits": ("codelength of the target (bits)", "balanced binary probe, target class vs rest"),
    "codelength_spurious_bits": ("codelength of the token (bits)", "balanced binary probe, token present or not"),
    # similarity
    "linear_cka": ("linear CKA", "similarity of pretrained and fine-tuned activations of the same examples "
                   "(Kornblith et al. 2019); 1 = unchanged up to rotation and scale"),
    "debiased_linear_cka": ("debiased CKA", "linear CKA with the unbiased HSIC estimator; prefer it when "
                            "examples are few relative to the width"),
    "top_layer_cka_drift": ("top-layer CKA drift", "1 − linear CKA of the last layer, pretrained vs fine-tuned "
                            "(0 = representation unchanged)"),
    # attribution
    "spurious_attribution_share": ("spurious attribution share", "absolute attribution mass on the spurious "
                                   "token divided by the total mass"),
    "spurious_input_share": ("token's share of the input", "the spurious token's share of the words: the "
                             "attribution share to expect by chance"),
    "spurious_top1_rate": ("top-1 rate", "how often the spurious token is the most attributed word"),
    "comprehensiveness_aopc": ("comprehensiveness", "ERASER (DeYoung et al. 2020): p(ŷ|x) − p(ŷ|x without the "
                               "top-k % words), averaged over k ∈ {1, 5, 10, 20, 50} %"),
    "sufficiency_aopc": ("sufficiency", "ERASER: p(ŷ|x) − p(ŷ|only the top-k % words), averaged over "
                         "k ∈ {1, 5, 10, 20, 50} %"),
    "first_side_share": ("first-text share", "pairs: absolute attribution mass on the first text's words / total"),
    "second_side_share": ("second-text share", "pairs: absolute attribution mass on the second text's words / total"),
    "token_side_share": ("token's side share", "pairs: attribution mass on the planted token's side / total"),
    "token_side_input_share": ("token's side input share", "pairs: the token's side's share of the words: the "
                               "side share to expect by chance"),
    "first_side_comprehensiveness_aopc": ("first-text comprehensiveness", "ERASER comprehensiveness with only the "
                                          "first text's top-k % words removed, the second kept whole"),
    "first_side_sufficiency_aopc": ("first-text sufficiency", "ERASER sufficiency with the first text reduced to its "
                                    "top-k % words, the second kept whole"),
    "second_side_comprehensiveness_aopc": ("second-text comprehensiveness", "ERASER comprehensiveness with only the "
                                           "second text's top-k % words removed, the first kept whole"),
    "second_side_sufficiency_aopc": ("second-text sufficiency", "ERASER sufficiency with the second text reduced to "
                                     "its top-k % words, the first kept whole"),
    "partial_accuracy": ("accuracy, partial input", "test accuracy of the pair model with one text replaced or "
                         "emptied (full: both texts)"),
    "partial_flip_rate": ("flip rate, partial input", "share of pairs whose prediction differs from the full pair's"),
    "partial_target_rate": ("target rate", "other-class pairs with the planted token: share still sent to the "
                            "token's class"),
    "partial_retained": ("retained accuracy", "(accuracy − majority rate) / (full pairs' accuracy − majority rate)"),
    "relative_convergence_delta": ("relative convergence delta", "integrated-gradients completeness error "
                                   "relative to |F(x) − F(baseline)|"),
    "large_delta_rate": ("large-delta rate", "share of examples whose relative convergence delta exceeds 0.05"),
    # causal
    "concept_accuracy": ("concept probe accuracy", "a fresh logistic probe for the erased concept on held-out "
                         "erased activations; the guarantee: no better than the majority rate"),
    "concept_majority": ("concept majority rate", "accuracy of always predicting the concept's majority value"),
    "concept_balanced_accuracy": ("concept balanced accuracy", "balanced accuracy of the fresh concept probe"),
    "concept_chance": ("concept chance", "balanced accuracy of a constant prediction (½)"),
    "s_only_error_scan": ("s-only error (head scan)", "s-only error with one attention head's output zeroed"),
    # columns
    "value": ("value", "the metric's point estimate"),
    "value_ci": ("value [95 %]", "the metric's point estimate, its 95 % interval under it"),
    "ci_low": ("95 % low", "lower end of the 95 % interval (bootstrap over test examples, or across seeds)"),
    "ci_high": ("95 % high", "upper end of the 95 % interval"),
    "n": ("n", "examples the number is computed on"),
    "seed": ("seed", "fine-tuning seed; \"all\" rows pool the seeds (mean, Student-t interval)"),
    "layer": ("layer", "0 = embeddings, then one per transformer block"),
    "head": ("head", "attention head of the block, counted from 0"),
    "count": ("training count", "training examples containing the feature"),
    "override_control": ("control", "override rate of frequency-matched control words inserted the same way"),
    "property": ("property", "what is probed or tested: the task, a planted token, a natural property or an edit"),
    "partition": ("partition", "clean, aligned (token in its class) or conflicting (token in other classes)"),
    "method": ("method", "attribution or erasure method; random = the random-order or random-direction control"),
    "concept": ("concept", "position: does this position hold the token; document: does the text contain it"),
    "condition": ("condition", "none = unedited model, erased = concept erased, random = as many random "
                  "directions erased, difference = erased − random"),
    "intervention": ("intervention", "what replaced the fine-tuned block: the pretrained block, a fresh "
                     "initialisation, or a zeroed attention head"),
}


def label(name: str) -> str:
    """The human name of ``name``; unknown names read with spaces for underscores."""
    return TERMS[name][0] if name in TERMS else str(name).replace("_", " ")


def definition(name: str) -> str:
    """One-line definition of ``name``; ``""`` when the glossary has none."""
    return TERMS[name][1] if name in TERMS else ""


def entries(names) -> list[dict]:
    """Glossary rows for the known ``names`` (deduplicated by human name), sorted by human name."""
    seen: dict[str, str] = {}
    for n in names:
        if n in TERMS and TERMS[n][0] not in seen:
            seen[TERMS[n][0]] = TERMS[n][1]
    return [{"term": k, "definition": v} for k, v in sorted(seen.items(), key=lambda kv: kv[0].lower())]
