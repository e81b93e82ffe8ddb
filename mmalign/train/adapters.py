"""LoRA through peft itself, on any ``nn.Module``: add, load, switch off for a reference
forward, and save as a peft adapter folder.

Adapters are injected with ``peft.inject_adapter_in_model`` rather than the ``add_adapter``
wrappers of transformers and diffusers. The wrappers tie each transformers release to a
range of peft releases (transformers 5.24 refuses every peft that exists), and several
models we train have no wrapper at all (diffusers' ``StableAudioDiTModel``,
``AudioLDM2UNet2DConditionModel``). peft alone has neither problem.

peft's public toggles (``enable_adapters`` / ``set_adapter``) also rewrite ``requires_grad``
flags; a reference forward must leave the optimiser's view of the policy untouched, so the
context managers here restore those flags on exit.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

from torch import nn

from mmalign.errors import ConfigError

#: the file and config names of a peft adapter folder (``PeftModel.save_pretrained``)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: the key prefix ``PeftModel`` gives the wrapped model's parameters; transformers'
#: ``load_adapter`` strips it, ``PeftModel.from_pretrained`` expects it
PEFT_PREFIX = "base_model.model."


def tuner_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def has_adapters(model: nn.Module) -> bool:
    return bool(tuner_layers(model))


def adapter_configs(model: nn.Module) -> dict:
    """``{adapter name: LoraConfig}`` of the adapters in ``model`` (empty without any)."""
    return dict(getattr(model, "peft_config", None) or {}) if has_adapters(model) else {}


def inject(model: nn.Module, config, adapter_name: str = "default") -> nn.Module:
    """``peft.inject_adapter_in_model``, keeping the configs of adapters already there: peft
    replaces ``model.peft_config`` with a dict of the new adapter alone."""
    from peft import inject_adapter_in_model

    before = adapter_configs(model)
    if adapter_name in before:
        raise ConfigError(f"{type(model).__name__} already has an adapter named '{adapter_name}'")
    with warnings.catch_warnings():  # several adapters in one model are the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
    model.peft_config = {**before, adapter_name: config}
    return model


def add_lora(model: nn.Module, *, r: int, alpha: float, dropout: float,
             target_modules: Sequence[str] | str, adapter_name: str = "default") -> nn.Module:
    """Add a trainable LoRA adapter in place; base weights are frozen."""
    from peft import LoraConfig

    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        init_lora_weights=True, fan_in_fan_out=_has_conv1d(model))
    try:
        inject(model, config, adapter_name)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"model.lora on {type(model).__name__}: {exc}. Set model.lora.target_modules "
                          "to names of its Linear / Conv layers") from None
    for layer in tuner_layers(model):
        layer.set_adapter(adapter_name)  # trainable: only this adapter's weights
    return model


def _has_conv1d(model: nn.Module) -> bool:
    """GPT-2-style ``Conv1D`` layers store their weight as (in, out): LoRA must know
    (``fan_in_fan_out``), and the adapter's config records it for whoever loads it."""
    return any(type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers")
               for m in model.modules())


def load_named_adapter(model: nn.Module, path: str, adapter_name: str = "reference") -> None:
    """Load a peft adapter folder (``adapter_config.json`` + weights) as a frozen, inactive
    adapter of ``model``: TR/SFT-style references without a second copy of the base."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(path)
    cfg_file, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not cfg_file.is_file() or not weights.is_file():
        raise ConfigError(f"reference.adapter_path {folder}: expected {ADAPTER_CONFIG} and "
                          f"{ADAPTER_WEIGHTS} (a peft adapter folder)")
    raw = json.loads(cfg_file.read_text())
    # fan_in_fan_out: GPT-2's Conv1D stores its weight transposed; the adapter must say so
    keep = {k: raw[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "fan_in_fan_out")
            if k in raw}
    state = {_unprefixed(k): v for k, v in load_file(str(weights)).items()}
    with restored_grad_flags(model):
        active = [a for layer in tuner_layers(model)[:1] for a in layer.active_adapters]
        inject(model, LoraConfig(**keep), adapter_name)
        result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
        for layer in tuner_layers(model):
            layer.set_adapter(active)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ConfigError(f"reference.adapter_path {folder}: {len(unexpected)} weights match no layer of "
                          f"{type(model).__name__} (first: {unexpected[0]}); the adapter was trained on another model")
    for name, p in model.named_parameters():
        if f".{adapter_name}." in name:
            p.requires_grad_(False)


def save_adapter(model: nn.Module, out_dir: str | Path, adapter_name: str | None = None) -> list[Path]:
    """Write one adapter as a peft adapter folder (``adapter_config.json`` +
    ``adapter_model.safetensors``, keys as ``PeftModel.save_pretrained`` writes them), which
    ``PeftModel.from_pretrained(base, folder)`` and transformers' ``load_adapter`` both read.
    ``adapter_name`` defaults to ``default``, else the first adapter."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    name = adapter_name or export_name(model)
    if name is None:
        raise ConfigError(f"{type(model).__name__} has no LoRA adapter to save")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=name)
    adapter_configs(model)[name].save_pretrained(str(out))
    save_file({PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return [out / ADAPTER_CONFIG, out / ADAPTER_WEIGHTS]


def export_name(model: nn.Module) -> str | None:
    """The adapter to export: ``default`` if present, else the first one; None without adapters."""
    configs = adapter_configs(model)
    if not configs:
        return None
    return "default" if "default" in configs else next(iter(configs))


def _unprefixed(key: str) -> str:
    return key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key


@contextlib.contextmanager
def restored_grad_flags(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The base model: every LoRA layer passes its input through the frozen weight only."""
    layers = tuner_layers(model)
    with restored_grad_flags(model):
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield model
        finally:
            for layer in layers:
                layer.enable_adapters(True)


def disabler(model: nn.Module) -> Callable[[nn.Module], ContextManager[nn.Module]]:
    """:func:`adapters_disabled` for a model whose LoRA layers are all in place (a trainer's
    adapters-off reference, entered at every step): the layers are found once here, not by a
    walk over every module of the model at each call. The returned function takes what to
    yield (the policy, or the scorer wrapping it).

    A LoRA layer's forward skips its adapters while peft's flag ``_disable_adapters`` is set
    (the ``disable_adapters`` property; a merged adapter is unmerged there). peft's public
    toggle sets that flag and also rewrites ``requires_grad`` on every adapter weight, which a
    reference forward would then have to restore; setting the flag alone changes nothing else.
    Layers without the flag (another peft) go through the public toggle, flags restored."""
    layers = tuner_layers(model)
    if all(hasattr(layer, "_disable_adapters") for layer in layers):
        return _flag_switch(layers)
    weights = [p for layer in layers for p in layer.parameters()]

    @contextlib.contextmanager
    def disabled(wrapper: nn.Module) -> Iterator[nn.Module]:
        flags = [p.requires_grad for p in weights]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield wrapper
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for p, flag in zip(weights, flags):
                p.requires_grad_(flag)

    return disabled


def _flag_switch(layers: list[nn.Module]) -> Callable[[nn.Module], ContextManager[nn.Module]]:
    @contextlib.contextmanager
    def disabled(wrapper: nn.Module) -> Iterator[nn.Module]:
        before = [layer._disable_adapters for layer in layers]
        for layer in layers:
            layer._disable_adapters = True
        try:
            yield wrapper
        finally:
            for layer, flag in zip(layers, before):
                layer._disable_adapters = flag

    return disabled


@contextlib.contextmanager
def adapter_active(model: nn.Module, adapter_name: str) -> Iterator[nn.Module]:
    """Run with only ``adapter_name`` active (a named reference adapter)."""
    layers = tuner_layers(model)
    before = [list(layer.active_adapters) for layer in layers]
    with restored_grad_flags(model):
        for layer in layers:
            layer.set_adapter(adapter_name)
        try:
            yield model
        finally:
            for layer, names in zip(layers, before):
                layer.set_adapter(names)


def merged_copy(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    """A copy of ``model`` with one LoRA adapter merged into its base weights and every tuner
    layer replaced by its base layer: a plain module (a composite model too: a vision tower
    beside a language model, a UNet beside its conditioning) whose ``save_pretrained`` or
    ``state_dict`` holds ordinary weight names, never ``base_layer`` / ``lora_A`` keys.
    ``model`` is left as it is. ``adapter_name`` defaults to :func:`export_name`."""
    import copy

    from peft.tuners.tuners_utils import BaseTunerLayer

    name = adapter_name or export_name(model)
    out = copy.deepcopy(model)
    if name is None:
        return out
    for parent in list(out.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge(adapter_names=[name])
                setattr(parent, child_name, child.get_base_layer())
    if hasattr(out, "peft_config"):
        del out.peft_config
    return out
