"""An mmalign modality for 1-D signals: Diffusion-DPO on diffusers' ``UNet1DModel``.

Diffusion-DPO (Wallace et al. 2023, Diffusion Model Alignment Using Direct Preference
Optimization, arXiv:2311.12908) applies DPO (Rafailov et al. 2023, arXiv:2305.18290) to a
denoiser. Each row prefers one signal of ``length`` floats to another. A step draws, per row,
a timestep ``t`` and noise ``e`` shared by the pair, and scores each signal ``x_0`` by

    s = -0.5 * mean((unet(x_t, t) - e)^2),   x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e

(epsilon targets of a DDPM schedule). Draws, noising, targets, the surrogate and the export
come from the shared library :mod:`mmalign.modalities.denoising`; what is left here is the
UNet1DModel: building, loading and running it. Unconditional: UNet1DModel takes no condition.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DanceDiffusionPipeline, DDPMScheduler, UNet1DModel
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from torch import nn

from mmalign.config import validate_options
from mmalign.data.io import RowRef, read_rows, require_fields
from mmalign.errors import ConfigError
from mmalign.modalities.denoising import targets
from mmalign.modalities.denoising.draw import denoising_values, per_row, uniform_timestep
from mmalign.modalities.denoising.export import export_denoiser
from mmalign.modalities.denoising.surrogate import assemble, per_sample, side_major
from mmalign.modality import ModelSpec
from mmalign.surrogate import Batch, Draw, Surrogate

SALT = "signal"  # the row generators' salt: row_generator(seed, sample_id, epoch, SALT)


class SignalOptions(BaseModel):
    """``length``: floats per signal (a multiple of 8, at least 32: the UNet halves it three
    times); ``num_train_timesteps``: length of the DDPM schedule."""

    model_config = ConfigDict(extra="forbid")
    length: StrictInt = Field(32, ge=32, multiple_of=8)
    num_train_timesteps: StrictInt = Field(1000, ge=2)


def tiny_unet1d(length: int = 32, channels: Sequence[int] = (8, 32, 32), seed: int = 0) -> UNet1DModel:
    """A random UNet1DModel (dance-diffusion blocks, sinusoidal time embedding; its
    self-attention has one head per 32 channels, hence the wide inner blocks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet1DModel(sample_size=length, in_channels=1, out_channels=1, extra_in_channels=channels[0],
                           time_embedding_type="positional", block_out_channels=tuple(channels), norm_num_groups=8)


class SignalModality:
    """Pairs of 1-D signals for ``UNet1DModel`` (options: :class:`SignalOptions`)."""

    Options = SignalOptions
    supported_needs: frozenset[str] = frozenset()
    policy_dependent_draw = False
    lora_target_modules = ("query", "key", "value", "proj_attn")  # the nn.Linear layers of SelfAttention1d

    def __init__(self, **options: Any):
        self.options = SignalOptions(**validate_options(SignalOptions, options, "signal"))
        self.scheduler = DDPMScheduler(num_train_timesteps=self.options.num_train_timesteps)

    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """An export folder (``unet/`` inside, or a UNet1DModel folder itself) or ``tiny_unet1d``."""
        if spec.path:
            sub = "unet" if (Path(spec.path) / "unet").is_dir() else None
            return UNet1DModel.from_pretrained(spec.path, subfolder=sub, torch_dtype=spec.dtype)
        if spec.builder != "tiny_unet1d":
            raise ConfigError(f"unknown signal builder {spec.builder!r}; the signal modality builds 'tiny_unet1d'")
        unet = tiny_unet1d(self.options.length, **spec.builder_args)
        return unet if spec.dtype == torch.float32 else unet.to(spec.dtype)  # diffusers warns on any .to

    def load_records(self, path: str, schema: str | None = None) -> list[dict[str, Any]]:
        records, length = [], self.options.length
        for row_index, row in read_rows(path):
            where = RowRef(str(path), row_index)
            require_fields(row, ("chosen", "rejected"), where)
            for side in ("chosen", "rejected"):
                values = row[side]
                if not (isinstance(values, list) and len(values) == length and all(
                        isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
                    raise where.error(side, f"must be a list of {length} finite numbers",
                                      "Give every signal model.options.length values")
            records.append({"sample_id": f"{Path(path).name}:{row_index}", "chosen": row["chosen"],
                            "rejected": row["rejected"], "fields": {}})
        return records

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """``signals`` ``[B, 2, 1, length]``: winner, then loser, one channel each."""
        signals = torch.tensor([[r["chosen"], r["rejected"]] for r in records], dtype=torch.float32)
        return Batch(inputs={"signals": signals[:, :, None]}, sample_id=[r["sample_id"] for r in records])

    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        return True  # a new timestep and noise every epoch

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Per row, from its own generator: ``timesteps`` ``[B]``, ``noise`` ``[B, 1, length]``."""
        shape, sample_t = (1, self.options.length), uniform_timestep(self.options.num_train_timesteps)
        return per_row(batch.sample_id, seed, batch.epoch, SALT, lambda gen: denoising_values(gen, shape, sample_t))

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """One UNet forward over winners then losers; ``-0.5 * mean((pred - e)^2)`` per signal."""
        weight = next(model.parameters())
        x0 = batch.inputs["signals"].to(weight.device, weight.dtype)
        noise, x_t = targets.noisy_pairs(self.scheduler, x0, draw["noise"], draw["timesteps"])
        t = draw["timesteps"].to(weight.device).repeat(2)
        prediction = model(side_major(x_t), t).sample
        target = targets.target(self.scheduler, side_major(x0), side_major(noise), t)
        return assemble(per_sample(prediction, target), len(batch), 2)

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """``unet/`` (``save_pretrained``); with LoRA also ``peft_adapter/``, and ``unet/`` holds
        the adapter merged (no UNet1DModel pipeline has diffusers' ``save_lora_weights``)."""
        return export_denoiser(model, out_dir, card, DanceDiffusionPipeline, component="unet")

    @staticmethod
    def example(folder: str) -> dict[str, Any]:
        """The tiny UNet1DModel and six pairs: a clean sine preferred to the same sine with a zigzag."""
        rows = []
        for i in range(6):
            clean = [math.sin(2 * math.pi * (1 + i % 3) * k / 32 + i) for k in range(32)]
            rows.append({"chosen": clean, "rejected": [v + (0.5 if k % 2 else -0.5) for k, v in enumerate(clean)]})
        path = Path(folder) / "signals.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return {"spec": ModelSpec(builder="tiny_unet1d"), "data": str(path), "options": {"length": 32}}
