"""The conformance kit passes for every built-in modality, from its own example() hook."""
from __future__ import annotations

import pytest

from mmalign.testing import check_modality


@pytest.mark.parametrize("name", ["text", "vision_language", "image_diffusion"])
def test_every_builtin_modality_passes_the_kit(name, one_thread):
    results = check_modality(name)
    assert [r.name for r in results] == ["protocol", "records", "shapes", "units", "gradient", "step0",
                                         "draw", "export", "export_lora"]
    failed = [str(r) for r in results if not r.ok]
    assert not failed, failed
    lora = results[-1]
    assert "skipped" not in lora.detail, lora  # every built-in names LoRA targets


# -- fixture plugins with one defect each -------------------------------------------------------

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from mmalign import registry  # noqa: E402
from mmalign.surrogate import Draw, Surrogate  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "plugins" / "mmalign_toy_plugin"))
from mmalign_toy_plugin import GaussianMean, ToyModality  # noqa: E402


class NoCollate(ToyModality):
    collate = None  # type: ignore[assignment]


class Detached(ToyModality):
    def surrogate(self, model, batch, draw, needs):
        return super().surrogate(model, batch, draw, needs).detach()


class FunctionalDropout(GaussianMean):
    def forward(self, x):  # dropout the trainer's switch cannot see
        return super().forward(F.dropout(x, 0.5, training=self.training))


class DropoutOn(ToyModality):
    def load_policy(self, spec):
        return FunctionalDropout(self.dim)


class Projected(nn.Module):
    """A linear map before the Gaussian, so LoRA has a layer to adapt."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.gauss = GaussianMean(dim)

    def forward(self, x):
        return self.gauss(self.proj(x))


class BrokenLoraExport(ToyModality):
    lora_target_modules = ("proj",)

    def load_policy(self, spec):
        torch.manual_seed(0)
        model = Projected(self.dim)
        if spec.path:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(Path(spec.path) / "model.safetensors")), strict=False)
        return model

    def export(self, model, out_dir, card):  # the plain state dict: base_layer / lora keys, no adapter
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(Path(out_dir) / "model.safetensors"))
        return [str(Path(out_dir) / "model.safetensors")]


class NoIds(ToyModality):
    def load_records(self, path, schema=None):
        return [{k: v for k, v in r.items() if k != "sample_id"} for r in super().load_records(path)]


class BatchNoise(ToyModality):
    def draw(self, batch, seed, model):
        gen = torch.Generator().manual_seed(seed)  # one generator for the whole batch
        return Draw({"shift": torch.randn(len(batch), generator=gen)})

    def surrogate(self, model, batch, draw, needs):
        out = super().surrogate(model, batch, draw, needs)
        return Surrogate(chosen=out.chosen + draw["shift"], rejected=out.rejected)


@pytest.mark.parametrize("cls, check, reason", [
    (NoCollate, "protocol", "no method 'collate(records)'"),
    (Detached, "gradient", "the surrogate carries no gradient"),
    (DropoutOn, "step0", "dropout the trainer's switch cannot reach"),
    (BrokenLoraExport, "export_lora", "wrote no peft adapter (adapter_config.json)"),
    (NoIds, "records", "has no sample_id"),
    (BatchNoise, "draw", "use mmalign.modality.row_generator(seed, sample_id, epoch) per row"),
])
def test_the_kit_fails_a_defective_plugin_with_the_reason(cls, check, reason, restore_registries):
    registry.modalities.register("defective", cls)
    results = {r.name: r for r in check_modality("defective")}
    assert not results[check].ok and reason in results[check].detail, results[check]
    # everything before the defective check passed
    order = ["protocol", "records", "shapes", "units", "gradient", "step0", "draw", "export", "export_lora"]
    assert all(results[name].ok for name in order[:order.index(check)] if name in results)
