"""A complete mmalign modality in one file: a Gaussian likelihood over vectors.

Each row is a preference between two vectors in R^D; the model is an isotropic Gaussian with
a learnable mean. Its exact log-likelihood, split per dimension ``d`` (the "units")::

    log N(x; mu, I) = sum_d [ -0.5 * (x_d - mu_d)**2 - 0.5 * log(2 * pi) ]

DPO on it moves ``mu`` toward chosen vectors and away from rejected ones. The class needs no
base class: it satisfies :class:`mmalign.modality.Modality` by shape, and mmalign finds it
through the ``mmalign.modalities`` entry point in this package's pyproject.toml.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmalign.data.io import RowRef, read_rows, require_fields
from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec
from mmalign.surrogate import Batch, Draw, Surrogate


class GaussianMean(nn.Module):
    """The trainable model: the mean of an isotropic unit-variance Gaussian."""

    def __init__(self, dim: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension log-density ``[B, D]``."""
        return -0.5 * (x - self.mean) ** 2 - 0.5 * math.log(2 * math.pi)


class ToyModality:
    supported_needs = frozenset({"token_logps"})
    policy_dependent_draw = False
    lora_target_modules: tuple[str, ...] = ()

    def __init__(self, dim: int = 2):
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"toy option dim must be a positive integer, got {dim!r}")
        self.dim = dim

    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """A fresh mean (builder ``gaussian_mean``) or the one an export wrote (``path``)."""
        model = GaussianMean(self.dim)
        if spec.path:
            weights = Path(spec.path) / "model.safetensors"
            if not weights.is_file():
                raise ConfigError(f"{weights} does not exist; point model.path at a toy export folder")
            model.load_state_dict(load_file(str(weights)))
        elif spec.builder != "gaussian_mean":
            raise ConfigError(f"unknown toy builder {spec.builder!r}; the toy modality builds 'gaussian_mean'")
        return model

    def load_records(self, path: str, schema: str | None = None) -> list[dict[str, Any]]:
        records = []
        for row_index, row in read_rows(path):
            where = RowRef(str(path), row_index)
            require_fields(row, ("chosen", "rejected"), where)
            for side in ("chosen", "rejected"):
                if len(row[side]) != self.dim:
                    raise where.error(side, f"has {len(row[side])} numbers, expected {self.dim}",
                                      "Give every vector the recipe's dim")
            records.append({"sample_id": f"{Path(path).name}:{row_index}",
                            "chosen": row["chosen"], "rejected": row["rejected"]})
        return records

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        inputs = {side: torch.tensor([r[side] for r in records], dtype=torch.float32)
                  for side in ("chosen", "rejected")}
        return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records])

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        return Draw()  # an exact likelihood needs no randomness

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        chosen, rejected = model(batch.inputs["chosen"]), model(batch.inputs["rejected"])
        mask = torch.ones_like(chosen, dtype=torch.bool)
        return Surrogate(chosen=chosen.sum(-1), rejected=rejected.sum(-1), chosen_units=chosen,
                         rejected_units=rejected, chosen_mask=mask, rejected_mask=mask)

    @staticmethod
    def example(folder: str) -> dict[str, Any]:
        """A fresh model and four rows, for ``mmalign check-plugin toy``."""
        path = Path(folder) / "vectors.jsonl"
        path.write_text("".join(f'{{"chosen": [1.0, {i}], "rejected": [0.0, {-i}]}}\n' for i in range(4)))
        return {"spec": ModelSpec(builder="gaussian_mean"), "data": str(path), "options": {"dim": 2}}

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"mean": model.mean.detach().contiguous()}, str(out / "model.safetensors"))
        (out / "README.md").write_text(card, encoding="utf-8")
        return [str(out / "model.safetensors"), str(out / "README.md")]
