"""Task kinds: what differs between, say, text classification and token classification.

Each kind is a package ``probe/tasks/<kind>/`` holding everything particular to it (data builder,
fine-tuning objective, representations, analyses wiring, discovery) and, in its ``__init__.py``, its
light facts as ``SPEC`` (:class:`probe.tasks.spec.KindSpec`). A run (:mod:`probe.engine`) asks the kind
chosen by ``task.type`` how data loads, which head the model gets, what it is trained on, what a
representation is and which tables and summary keys the analyses write
(:class:`probe.tasks.base.TaskKind`); configuration checks, the command line and checkpoint reading ask
this registry for the facts, without importing any kind's heavy modules. A new kind is one package plus
a line in :data:`KIND_PACKAGES` (docs/architecture.md, "Adding a kind").
"""

from __future__ import annotations

import importlib

from probe.errors import ProbeError
from probe.tasks.spec import KindSpec

#: the kind packages, one line per kind; the first is the default ``task.type``
KIND_PACKAGES: tuple[str, ...] = (
    "probe.tasks.sequence",
    "probe.tasks.tokens",
    "probe.tasks.pairs",
)

#: ``task.type`` -> the kind's :class:`KindSpec`, in registry order
TASK_KINDS: dict[str, KindSpec] = {}
for _package in KIND_PACKAGES:
    _spec = importlib.import_module(_package).SPEC
    TASK_KINDS[_spec.name] = _spec

#: the ``task.type`` of a config that names none
DEFAULT_KIND: str = next(iter(TASK_KINDS))


def kind_spec(name: str) -> KindSpec:
    """The facts of the kind registered for ``task.type`` ``name``."""
    if name not in TASK_KINDS:
        raise ProbeError(f"task.type: {name!r} is unknown; allowed: {', '.join(TASK_KINDS)}")
    return TASK_KINDS[name]


def task_kind(name: str):
    """The task kind (:class:`~probe.tasks.base.TaskKind`) registered for ``task.type`` ``name``."""
    module, _, cls = kind_spec(name).implementation.partition(":")
    return getattr(importlib.import_module(module), cls)()


def kinds_of_architecture(architectures: list[str] | tuple[str, ...] | str) -> list[KindSpec]:
    """Every kind whose models have one of these class names (a ``config.json``'s ``architectures``), in
    registry order. Kinds may share a head (a classifier of text pairs is a sequence classifier), so
    a model's class alone can name several."""
    names = [architectures] if isinstance(architectures, str) else list(architectures or [])
    return [s for s in TASK_KINDS.values() if any(n.endswith(s.architecture_suffix) for n in names)]


def kind_of_architecture(architectures: list[str] | tuple[str, ...] | str) -> KindSpec | None:
    """The kind whose models have one of these class names when exactly one kind does; None when none
    does or several do (then only the config's ``task.type`` can tell)."""
    found = kinds_of_architecture(architectures)
    return found[0] if len(found) == 1 else None


def kinds_of_model(model) -> list[KindSpec]:
    """The kinds a loaded model (or the model a ``peft`` wrapper holds) can serve, from its class name."""
    base = model.get_base_model() if hasattr(model, "peft_config") and hasattr(model, "get_base_model") else model
    return kinds_of_architecture(type(base).__name__)


def kind_of_peft_task(task_type: str | None) -> KindSpec | None:
    """The kind of a ``peft`` adapter whose ``adapter_config.json`` says ``task_type``, when exactly one
    kind uses that task type (else None)."""
    found = [s for s in TASK_KINDS.values() if s.peft_task_type == task_type]
    return found[0] if len(found) == 1 else None


def dataset_kind(dataset: str) -> KindSpec | None:
    """The kind a built-in dataset is made for (None: not a built-in, any kind may try it)."""
    return next((s for s in TASK_KINDS.values() if dataset in s.datasets), None)


def check_dataset_kind(dataset: str, name: str, allowed: str) -> None:
    """Refuse, in one line ending with ``allowed``, a built-in dataset made for another kind than ``name``."""
    other = dataset_kind(dataset)
    if other is not None and other.name != name:
        raise ProbeError(f"task.dataset: {dataset!r} is a {other.name} dataset, but task.type is {name}; set "
                         f"task.type: {other.name} ({allowed})")
