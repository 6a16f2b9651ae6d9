"""Discovery: the shortcuts nobody planted (issue 15; docs/design.md §8).

Candidates come from the training data (:mod:`probe.discovery.candidates`: word and bigram label
association, natural-property slices, tagger markers) and from the model
(:mod:`probe.discovery.model_candidates`: attribution mass that fine-tuning amplified); each capped
candidate gets a causal test of use against frequency-matched controls
(:mod:`probe.discovery.causal_test`), and :mod:`probe.discovery.verdicts` turns the intervals and
Benjamini-Hochberg q-values into a verdict. :func:`probe.discovery.discover.discover` runs it all.
"""
