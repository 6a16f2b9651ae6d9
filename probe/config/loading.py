"""Loading an experiment config: YAML files, ``--set`` overrides, sweeps' variants and one-line errors.

Everything a run does is decided here, once, at the edge. Every refusal names the field, the bad
value and what is allowed.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Mapping, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from probe.config.sections import Config, PlantedFeature
from probe.errors import ProbeError

DEFAULT_CONFIG_NAME = "default.yaml"


def default_config_text() -> str:
    """The YAML of the built-in default (the same file as ``examples/default.yaml``)."""
    return resources.files("probe.config").joinpath(DEFAULT_CONFIG_NAME).read_text()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ProbeError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ProbeError(f"config path {str(path)!r} is a folder; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ProbeError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}: "
                         f"{e.object[e.start:e.start + 1]!r}); allowed: a YAML file saved as UTF-8") from None
    except OSError as e:
        raise ProbeError(f"config file {str(path)!r} cannot be read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProbeError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        raise ProbeError(f"config file {str(path)!r} is empty; give at least task and spurious sections")
    if not isinstance(data, dict):
        raise ProbeError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=c`` -> (``a.b``, parsed YAML scalar ``c``)."""
    if "=" not in item:
        raise ProbeError(f"override {item!r} must look like section.key=value, e.g. finetune.epochs=1")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ProbeError(f"override {item!r} has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``finetune.epochs``, ``spurious.0.token``) in a nested dict copy."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.replace("__", ".").split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ProbeError(
                        f"override {dotted!r}: {part!r} is not an index of {'.'.join(parts[:i])} "
                        f"(it has {len(node)} entries: 0..{len(node) - 1})"
                    )
                part = int(part)
                if last:
                    node[part] = value
                else:
                    node = node[part]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ProbeError(
                    f"override {dotted!r}: {'.'.join(parts[:i])} is a value, not a section"
                )
    return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line per refusal, naming field, value and what is allowed; joined with '; '."""
    messages = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-after"))
        loc = loc.replace(".planted", "")
        if e["type"] == "extra_forbidden":
            parent = _model_at(tuple(x for x in e["loc"][:-1] if x != "planted"))
            allowed = ", ".join(parent.model_fields) if parent else "see README"
            messages.append(f"{loc}: unknown key; allowed keys here: {allowed}")
            continue
        value = e.get("input")
        shown = repr(value)
        if isinstance(value, dict) or len(shown) > 80:
            shown = type(value).__name__
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            messages.append(f"{loc}: got {shown}: {msg}")
        else:
            messages.append(msg)
    return f"invalid config ({source}): " + "; ".join(messages)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        if get_origin(ann) in (Union, UnionType):  # Optional[Section]: the section
            ann = next((a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        if part == "spurious":
            model = PlantedFeature
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def load_config(
    source: str | Path | Mapping[str, Any] | Config | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
) -> Config:
    """Build a validated :class:`Config` from a YAML path, a dict, or the built-in default.

    ``overrides`` is either ``{"finetune.epochs": 1}`` or CLI strings ``["finetune.epochs=1"]``.
    Raises :class:`ProbeError` with a one-line message on any refusal.
    """
    if isinstance(source, Config):
        data, label = source.to_dict(), "given Config"
    elif source is None:
        data, label = yaml.safe_load(default_config_text()), "built-in default"
    elif isinstance(source, Mapping):
        data, label = dict(source), "given mapping"
    else:
        data, label = _read_yaml(Path(source)), str(source)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    if overrides:
        data = apply_overrides(data, overrides)
        label += " with overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ProbeError(_format_validation_error(e, label)) from None


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML (what ``config.yaml`` in a run directory holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def variant_configs(config: Config) -> list[Config]:
    """The validated config of every variant of a sweep (``compare:``), all checked before any work.

    Each is the base config without ``compare``, with the variant's overrides applied, named after
    the variant and written under ``output_dir/name/``.
    """
    base = config.to_dict()
    base.pop("compare", None)
    out = []
    for v in config.compare or []:
        data = apply_overrides(base, v.set)
        data["name"], data["output_dir"] = v.name, str(Path(config.output_dir) / config.name)
        try:
            out.append(Config.model_validate(data))
        except ValidationError as e:
            raise ProbeError(_format_validation_error(e, f"compare variant {v.name!r}")) from None
    return out
