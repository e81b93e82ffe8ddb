"""Recipes: a strict schema, YAML loading, dotted overrides, and messages a user can act on.

A wrong key, type or value fails here, before any model loads, naming the file, the key
and what is allowed.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmalign import assets, yaml_io
from mmalign.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    r: int = Field(8, gt=0)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = None
    adapter_name: str = "default"


class ModelSection(_Strict):
    modality: str
    path: str | None = None
    builder: str | None = None
    builder_args: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    lora: LoraConfig | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    #: dropout off in the policy and every reference, as TRL does: with it on, the policy
    #: (in train mode) and a frozen reference (in eval mode) disagree before any update
    disable_dropout: bool = True

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSection":
        if (self.path is None) == (self.builder is None):
            raise ValueError("give exactly one of model.path (a local checkpoint folder) "
                             "or model.builder (a tiny model from mmalign.models)")
        return self


class DataSection(_Strict):
    """``on_bad_row``: ``error`` stops at the first row that cannot be used, naming it;
    ``skip`` drops such rows and counts each reason in the log and ``data_report.json``.

    ``eval_fraction``: without ``eval``, hold out this share of the training rows as the
    held-out set (chosen by a hash of each row's id and the seed, so the split survives
    reordering the file). ``weight_field``: a numeric column of every row, its weight in the
    loss; ``weight_reduction`` says how weighted rows make the batch loss
    (:func:`mmalign.train.weights.reduce`). ``order_by``: a numeric column of every row that
    sets the order training visits rows in, ascending, or descending with a leading ``-``
    (a curriculum, e.g. TEMPLE's large-to-small perturbations: ``-perturbation_magnitude``);
    it needs ``train.shuffle: false`` (:func:`mmalign.train.order.sort_rows`)."""

    train: str
    eval: str | None = None
    schema_: str | None = Field(None, alias="schema")
    eval_fraction: float = Field(0.0, ge=0, lt=1)
    limit: int | None = Field(None, gt=0)
    on_bad_row: Literal["error", "skip"] = "error"
    weight_field: str | None = None
    weight_reduction: Literal["weighted_mean", "sum_over_batch"] = "weighted_mean"
    order_by: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_held_out(self) -> "DataSection":
        if self.eval is not None and self.eval_fraction:
            raise ValueError("give data.eval (a held-out file) or data.eval_fraction (rows held out of "
                             "data.train), not both")
        return self

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectiveTerm(_Strict):
    """A negative ``weight`` trains toward the rejected answers; it is refused unless
    ``allow_negative_weight`` says that is meant (an unlikelihood-style term)."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)
    allow_negative_weight: bool = False

    @model_validator(mode="after")
    def _weight_sign(self) -> "ObjectiveTerm":
        if self.weight < 0 and not self.allow_negative_weight:
            raise ValueError(f"a negative weight ({self.weight}) turns '{self.name}' around, toward the "
                             "rejected answers; use a positive weight, or set allow_negative_weight: true "
                             "on this term if that is meant")
        return self


class SyncConfig(_Strict):
    """TR-DPO (Gorbatovski et al. 2024): ref <- alpha * policy + (1 - alpha) * ref every N steps."""

    alpha: float = Field(0.6, gt=0, le=1)
    every: int = Field(512, gt=0)


class ReferenceSection(_Strict):
    strategy: Literal["auto", "copy", "adapters_off", "adapter", "precomputed", "none"] = "auto"
    adapter_path: str | None = None
    precompute_with: Literal["copy", "adapters_off", "adapter"] = "copy"
    cache_dir: str | None = None
    sync: SyncConfig | None = None


class TrainSection(_Strict):
    seed: int = 0
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int | None = Field(None, gt=0)
    epochs: int = Field(1, gt=0)
    optimizer: Literal["adamw", "adafactor", "adamw_8bit"] = "adamw"
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    #: what a non-finite loss or gradient norm does: stop (exit 1), skip the update, or
    #: write a checkpoint of the last good state and stop
    on_nonfinite: Literal["stop", "skip", "checkpoint-and-stop"] = "stop"
    gradient_checkpointing: bool = False
    save_every: int = Field(0, ge=0)
    keep_last: int = Field(2, gt=0)
    resume_from: str | None = None
    shuffle: bool = True
    cpu: bool = False
    #: name a plugin's mistakes at the first step (mmalign.train.first_step)
    first_step_checks: bool = True

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false


class EvalSection(_Strict):
    """``every``: held-out preference metrics every N steps (0: at the end only).
    ``evaluators``: registered evaluators run by ``mmalign eval`` on ``data`` (their own
    annotated data, e.g. images with object lists for CHAIR / POPE), each with its
    ``options[name]`` keyword arguments. ``prompts``: validation prompts the modality
    samples (same seeds each time) before training, every ``every`` steps and after, when it
    has ``write_samples``."""

    every: int = Field(0, ge=0)
    batch_size: int | None = Field(None, gt=0)
    prompts: list[str] = Field(default_factory=list)
    sample_seed: int = 0
    evaluators: list[str] = Field(default_factory=list)
    data: str | None = None
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class LoggingSection(_Strict):
    output_dir: str = "runs/latest"
    every: int = Field(1, gt=0)
    tensorboard: bool = True
    wandb: bool = False
    progress: bool = True


class Recipe(_Strict):
    model: ModelSection
    data: DataSection
    objective: list[ObjectiveTerm]
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("objective")
    @classmethod
    def _non_empty(cls, value: list[ObjectiveTerm]) -> list[ObjectiveTerm]:
        if not value:
            raise ValueError("name at least one objective")
        return value

    @model_validator(mode="after")
    def _order_or_shuffle(self) -> "Recipe":
        if self.data.order_by and self.train.shuffle:
            raise ValueError(f"data.order_by '{self.data.order_by}' sets the order of the rows, which "
                             "train.shuffle would undo; set train.shuffle: false")
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# -- loading -------------------------------------------------------------------------------

def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key.sub=value`` overrides, validate everything.

    ``path`` is a file, or the name of a bundled recipe (``demo_text_dpo``) when no such file
    exists, so the bundled recipes run from any directory and from an installed wheel."""
    path = Path(path)
    if not path.is_file():
        bundled = assets.recipe(str(path))
        if bundled is None:
            raise ConfigError(f"{path}: no such recipe file, and no bundled recipe of that name. "
                              "`mmalign list configs` shows the bundled ones")
        path = bundled
    try:
        raw = yaml_io.load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections (model, data, objective, ...); "
                          f"got {type(raw).__name__}")
    return from_dict(raw, source=str(path), overrides=overrides)


def from_dict(raw: dict[str, Any], source: str = "<recipe>", overrides=()) -> Recipe:
    raw = apply_overrides(raw, overrides, source)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None
    check_names(recipe, source)
    return shipped_paths(recipe)


#: the recipe keys that name input files or folders; ``assets/...`` there may mean a shipped file
INPUT_PATHS = (("model", "path"), ("data", "train"), ("data", "eval"), ("eval", "data"),
               ("reference", "adapter_path"))


def shipped_paths(recipe: Recipe) -> Recipe:
    """Each input path of the recipe as :func:`mmalign.assets.resolve` reads it."""
    for section, key in INPUT_PATHS:
        part = getattr(recipe, section)
        value = getattr(part, key)
        if isinstance(value, str):
            setattr(part, key, assets.resolve(value))
    return recipe


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, for recipes built in code (tests, demos,
    benchmarks): mappings merge key by key, ``None`` removes a key, anything else replaces;
    ``objective`` is always replaced whole."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "objective":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides, source: str) -> dict[str, Any]:
    """``train.lr=1e-5`` sets ``raw["train"]["lr"]``; the value is parsed as YAML.

    With one objective, ``objective.beta=0.2`` means ``objective.0.params.beta=0.2``.
    """
    import copy

    raw = copy.deepcopy(raw)
    if isinstance(raw.get("objective"), dict):
        raw["objective"] = [raw["objective"]]
    if isinstance(raw.get("objective"), list):
        raw["objective"] = [_flatten_objective(o) if isinstance(o, dict) else o
                            for o in raw["objective"]]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': write it as key.sub=value (for example train.lr=1e-5)")
        try:
            value = yaml_io.load(text)
        except yaml.YAMLError:
            value = text
        _set(raw, _objective_path(key.split("."), raw, item), value, item, source)
    return raw


def _objective_path(parts: list[str], raw: dict[str, Any], item: str) -> list[str]:
    if parts[0] != "objective" or len(parts) < 2:
        return parts
    if not parts[1].isdigit():
        if len(raw.get("objective") or []) != 1:
            raise ConfigError(f"override '{item}': the recipe has several objectives; name one by "
                              f"index, e.g. objective.0.{'.'.join(parts[1:])}")
        parts = [parts[0], "0", *parts[1:]]
    if len(parts) == 3 and parts[2] not in ("name", "weight", "params"):
        parts = [*parts[:2], "params", parts[2]]
    return parts


def _set(raw: dict[str, Any], parts: list[str], value: Any, item: str, source: str) -> None:
    node: Any = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override '{item}': '{part}' is not an index of this list "
                                  f"(it has {len(node)} items)")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override '{item}': '{part}' is not a section in {source}")
    if not isinstance(node, dict):
        raise ConfigError(f"override '{item}': cannot set a key inside a {type(node).__name__}")
    node[parts[-1]] = value


def _flatten_objective(obj: dict[str, Any]) -> dict[str, Any]:
    """Allow ``objective: {name: dpo, beta: 0.1}`` as shorthand for ``params: {beta: 0.1}``."""
    known = {"name", "weight", "params", "allow_negative_weight"}
    params = dict(obj.get("params") or {})
    params.update({k: v for k, v in obj.items() if k not in known})
    out = {k: v for k, v in obj.items() if k in known}
    out["params"] = params
    return out


def _explain(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_key(err["loc"], source))
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            got = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(got, (str, int, float, bool)) or got is None:
                lines.append(f"{source}: {key}: {msg} (got {got!r})")
            else:
                lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def validate_options(schema: type[BaseModel], options: dict[str, Any], modality: str) -> dict[str, Any]:
    """``model.options`` checked by a plugin's pydantic ``Options`` model; its errors named
    ``model.options.<key>``."""
    try:
        return schema.model_validate(options).model_dump()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(["model", "options", *(str(p) for p in err["loc"])])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}" + (f" (got {err['input']!r})" if err["type"] != "missing" else ""))
        raise ConfigError(f"model.options of modality '{modality}':\n" + "\n".join(lines)) from None


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            for inner in (cand, *getattr(cand, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
    return model


#: keys of earlier releases, and what replaced them
RENAMED = {"skip_bad_rows": "data.on_bad_row (error or skip)"}


def _unknown_key(loc: tuple, source: str) -> str:
    key = ".".join(str(p) for p in loc)
    model = _section_model(loc)
    allowed = sorted(
        (f.alias or name) for name, f in (model.model_fields.items() if model else ())
    )
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    if str(loc[-1]) in RENAMED:
        hint = f" It is now {RENAMED[str(loc[-1])]}."
    section = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int)) or "the top level"
    return f"{source}: unknown key '{key}'.{hint} Allowed in {section}: {', '.join(allowed)}"


def check_names(recipe: Recipe, source: str) -> None:
    """Registry names and objective parameters, checked before any model loads."""
    from mmalign import objectives, registry

    def named(kind_registry, name: str, key: str) -> Any:
        try:
            return kind_registry.get(name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None

    named(registry.modalities, recipe.model.modality, "model.modality")
    for i, term in enumerate(recipe.objective):
        spec = named(registry.objectives, term.name, f"objective[{i}].name")
        _check_params(spec, term, f"{source}: objective[{i}] ({term.name})")
    for name in recipe.eval.evaluators:
        named(registry.evaluators, name, "eval.evaluators")
    if recipe.data.schema_:
        named(registry.datasets, recipe.data.schema_, "data.schema")
    needs_ref = [t.name for t in recipe.objective
                 if objectives.get_spec(t.name).reference == "required"]
    if recipe.reference.strategy == "none" and needs_ref:
        raise ConfigError(f"{source}: reference.strategy is 'none' but {', '.join(needs_ref)} needs a "
                          "reference model; use copy, adapters_off, adapter or precomputed")
    if recipe.reference.strategy in ("adapters_off", "adapter") and recipe.model.lora is None:
        raise ConfigError(f"{source}: reference.strategy '{recipe.reference.strategy}' needs a LoRA "
                          "policy; add a model.lora section or use reference.strategy=copy")
    if recipe.reference.sync is not None and recipe.reference.strategy not in ("copy", "auto"):
        raise ConfigError(f"{source}: reference.sync (TR-DPO) moves a separate reference model; "
                          "use reference.strategy=copy")
    if recipe.reference.strategy == "adapter" and not recipe.reference.adapter_path:
        raise ConfigError(f"{source}: reference.strategy 'adapter' needs reference.adapter_path "
                          "(a peft adapter folder used as the reference, e.g. the SFT adapter)")


def _check_params(spec, term: ObjectiveTerm, where: str) -> None:
    from mmalign.objectives.compose import check_params

    try:
        check_params(spec, term.params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
