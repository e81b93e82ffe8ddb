"""Loading and placing the models of a run: the policy from a local path or a builder, a
damaged weights file named, the reference placed beside the policy, precision refused where
it cannot train, gradient checkpointing switched on."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec


def model_spec(recipe) -> ModelSpec:
    m = recipe.model
    return ModelSpec(path=m.path, builder=m.builder, builder_args=m.builder_args, dtype=m.torch_dtype)


def load_policy(modality, spec: ModelSpec) -> nn.Module:
    """``modality.load_policy``, with a damaged weights file named instead of safetensors'
    bare "header too large"."""
    from safetensors import SafetensorError

    try:
        return modality.load_policy(spec)
    except SafetensorError as exc:
        bad = damaged_weights(Path(spec.path)) if spec.path else []
        named = ", ".join(str(p) for p in bad) or f"a .safetensors file under {spec.path}"
        raise ConfigError(f"model.path: {named} cannot be read ({exc}): the file is damaged or "
                          "truncated; copy the checkpoint again") from None


def damaged_weights(folder: Path) -> list[Path]:
    """The ``.safetensors`` files under ``folder`` whose header does not read."""
    from safetensors import safe_open

    bad = []
    for file in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception:  # noqa: BLE001 - any failure to open is what we report
            bad.append(file)
    return bad


def check_precision(recipe, cpu: bool) -> None:
    """float16 on a CPU overflows and underflows where bf16 and float32 do not: refuse it."""
    if not cpu:
        return
    if recipe.model.dtype == "float16":
        raise ConfigError("model.dtype float16 on a CPU: its range is too narrow to train there and "
                          "the loss turns to NaN; use float32, or bfloat16")
    if recipe.train.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision fp16 needs a CUDA device; on a CPU use bf16 or no")


def place_reference(acc, model: nn.Module) -> nn.Module:
    """A frozen copy goes where the policy goes: sharded by accelerate under FSDP or ZeRO-3,
    so no process holds a whole second model; simply moved otherwise."""
    from accelerate.utils import DistributedType

    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return acc.prepare_model(model, evaluation_mode=True)
    return model.to(acc.device)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant checkpointing, so LoRA weights behind a frozen base still get gradients."""
    if hasattr(model, "gradient_checkpointing_enable"):  # transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    elif hasattr(model, "enable_gradient_checkpointing"):  # diffusers
        model.enable_gradient_checkpointing()
    else:
        raise ConfigError(f"{type(model).__name__} has no gradient checkpointing switch; set "
                          "train.gradient_checkpointing=false")
