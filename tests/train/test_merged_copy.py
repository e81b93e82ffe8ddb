"""``adapters.merged_copy``: a LoRA policy as a plain module with ordinary weight names, the
helper a plugin's export uses for a merged full model."""
from __future__ import annotations

import torch
from torch import nn

from mmalign.train import adapters


def test_merged_copy_gives_the_same_outputs_with_plain_weight_names():
    torch.manual_seed(0)
    model = nn.ModuleDict({"vision": nn.Linear(4, 4), "text": nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))})
    adapters.add_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["vision", "text.1"])
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p)

    def run(m, x):
        return m["text"](m["vision"](x))

    x = torch.randn(3, 4)
    merged = adapters.merged_copy(model)
    assert sorted(merged.state_dict()) == ["text.0.bias", "text.0.weight", "text.1.bias", "text.1.weight",
                                           "vision.bias", "vision.weight"]
    torch.testing.assert_close(run(merged, x), run(model, x), atol=1e-6, rtol=1e-6)
    # the original keeps its adapters, and they still change its output
    assert adapters.has_adapters(model) and not adapters.has_adapters(merged)
    with adapters.adapters_disabled(model):
        assert not torch.allclose(run(model, x), run(merged, x))
