"""The interface every task kind implements (docs/architecture.md, "Task kinds")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pandas as pd

from probe.config import Config
from probe.errors import ProbeError
from probe.tasks.spec import KindSpec


class TaskKind(ABC):
    """What a run needs to know about one kind of task. Kinds are stateless: everything a run learns
    lives in its :class:`~probe.engine.context.RunContext` (``ctx``).

    Class attribute ``spec``: the kind's light facts (:class:`~probe.tasks.spec.KindSpec`, its package's
    ``SPEC``), from which ``name`` (the ``task.type`` value), ``model_noun`` (log lines),
    ``examples_noun`` (what a verdict counts: "examples", "entity spans") and :meth:`auto_class` come.
    """

    spec: KindSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_noun(self) -> str:
        return self.spec.model_noun

    @property
    def examples_noun(self) -> str:
        return self.spec.examples_noun

    # --- data ------------------------------------------------------------------------------------

    @abstractmethod
    def load_data(self, config: Config) -> Any:
        """The checked and split data, with the planted features and their test counterfactuals."""

    @abstractmethod
    def describe(self, config: Config, data: Any) -> str:
        """One log line about the data."""

    def check_model(self, config: Config) -> None:
        """Refuse, before any heavy work, a model this kind cannot use: a causal decoder when the spec
        gives a ``decoder_refusal`` (otherwise any model will do)."""
        if self.spec.decoder_refusal is None:
            return
        from probe.models.adapter import LAYOUTS
        from probe.models.backbones import model_type

        for key in ("finetuned", "backbone"):
            name = getattr(config.model, key)
            if name is not None and any(lay.causal and model_type(name) in lay.model_types for lay in LAYOUTS):
                raise ProbeError(f"model.{key}: {name!r} is a causal decoder; {self.name} with a decoder is not "
                                 f"supported ({self.spec.decoder_refusal}); allowed: an encoder (minilm, tiny-bert, "
                                 "BERT, RoBERTa, DistilBERT, ELECTRA)")

    @abstractmethod
    def corpus(self, data: Any) -> tuple[list[str], list]:
        """The pretraining corpus ``task``: texts outside the test split (before planting) and their labels."""

    # --- model and training ----------------------------------------------------------------------

    def auto_class(self):
        """The ``transformers`` auto class of the fine-tuned model (its head): ``spec.auto_class``."""
        import transformers

        return getattr(transformers, self.spec.auto_class)

    @abstractmethod
    def labels(self, data: Any) -> list[str]:
        """The head's label names, in id order."""

    @abstractmethod
    def objective(self, ctx) -> Any:
        """The fine-tuning objective (:class:`probe.models.finetune.Objective`)."""

    @abstractmethod
    def planted_for_training(self, data: Any) -> list:
        """What counterfactual augmentation needs of the planted features (the loop checks it is there)."""

    @abstractmethod
    def finetune_key(self, data: Any) -> list:
        """What else identifies a fine-tuned model of this kind, besides backbone, settings, seed and data."""

    # --- representations and analyses ------------------------------------------------------------

    @abstractmethod
    def pretrained_representations(self, ctx) -> Any:
        """The pretrained model's representations shared by every seed (None when no analysis needs them)."""

    @abstractmethod
    def finetuned_representations(self, ctx, model, key: str, suffix: str) -> Any:
        """The fine-tuned model's representations (cached under ``key``), or None."""

    @abstractmethod
    def seed_tables(self, ctx, seed: int, model, pre: Any, fine: Any,
                    train_log: dict) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """Every analysis of one fine-tuning seed: tidy tables (without the seed column) and the
        per-example predictions (``tables/predictions.csv``, what ``probe compare`` pairs)."""

    @abstractmethod
    def summary(self, ctx, tables: dict[str, pd.DataFrame], train_logs: dict) -> dict:
        """This kind's part of ``summary.json``: ``features``, ``task_metric``, ``task_accuracy``,
        ``per_seed``, ``nothing_planted`` (the verdict without planted features), ``task`` and any
        other top-level keys."""


def final_validation(train_log: dict) -> dict[str, float]:
    """The validation scores a model ended with: its last epoch's, or a given checkpoint's."""
    return train_log["epochs"][-1] if train_log.get("epochs") else train_log.get("validation", {})


def add_tables(tables: dict[str, pd.DataFrame], extra: dict[str, pd.DataFrame]) -> None:
    """Add ``extra`` to ``tables``; a table both hold gets ``extra``'s rows appended (the ``budgets`` rows
    of attribution and of the causal tests, the invariance rows of ``behaviour``)."""
    for name, df in extra.items():
        tables[name] = pd.concat([tables[name], df], ignore_index=True) if name in tables else df
