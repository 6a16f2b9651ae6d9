"""What every stage of a run shares: the run context, the stage timer and the progress log."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from probe.config import Config


def log(msg: str) -> None:
    """A progress line on stderr (from the main process only, in a data-parallel run)."""
    from probe.distributed import current

    if current().is_main:
        print(f"[probe] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Seconds per stage; a stage entered several times (once per seed) adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


@dataclass
class RunContext:
    """One run: its validated config, task kind, data, tokenizer, device and folders, and what the
    stages learn on the way (where the pretrained weights are, what was reused, how fast extraction ran).

    ``shared_dir`` holds artifacts shared with the other runs of a sweep (the pretrained model's
    activations and pretraining checkpoints); ``backbone`` is where the pretrained weights are (the
    pretraining stage's folder, or ``model.backbone``) and ``backbone_key`` what identifies them.
    """

    config: Config
    kind: Any
    data: Any
    tokenizer: Any
    device: Any
    run_dir: Path
    timer: Timer
    progress: bool
    shared_dir: Path | None = None
    reused: list[str] = field(default_factory=list)
    backbone: str = ""
    backbone_key: str = ""
    pretraining: dict | None = None
    analysis_errors: list[dict] = field(default_factory=list)  # analyses that raised (probe.engine.guard)
    speeds: dict[str, float | None] = field(default_factory=dict)
    given: Any = None  # the given checkpoint (probe.models.checkpoints.Checkpoint) when model.finetuned is set

    @property
    def dist(self):
        from probe.distributed import current

        return current()

    @property
    def cache_root(self) -> Path:
        """Where artifacts of the pretrained model go: the sweep's shared folder, or this run's."""
        return self.shared_dir or self.run_dir

    def pretrained_encoder(self, seed: int | None = None):
        """The pretrained model (``AutoModel``; randomly initialised built-ins from ``seed``, default the run's),
        in the dtype models are loaded in on this device (:func:`probe.models.compute.load_dtype`)."""
        from probe.models.backbones import load_encoder
        from probe.models.compute import load_dtype
        from probe.models.heads import pretrained_label_word_model, uses_label_words

        dtype = load_dtype(self.config.compute.precision, self.device)
        if uses_label_words(self.config):  # the pretrained LM answering the same prompt zero-shot
            return pretrained_label_word_model(self, self.config.seed if seed is None else seed, dtype)
        return load_encoder(self.backbone, self.config.seed if seed is None else seed, dtype=dtype,
                            device_map=self.config.model.device_map)
