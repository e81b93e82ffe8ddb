"""Instantiating a tiny model class from its config the same way for every builder: the
attention implementation set, the weights drawn from ``seed`` alone, generation told the
tokenizer's pad and end tokens."""
from __future__ import annotations

import torch
from torch import nn


def seeded_model(model_class: type[nn.Module], config, tokenizer, seed: int, attn_implementation: str = "sdpa",
                 keep_bos: bool = True) -> nn.Module:
    """``model_class(config)`` in eval mode, its weights drawn after ``torch.manual_seed(seed)``;
    ``keep_bos`` false clears the generation BOS (Qwen templates start with no BOS)."""
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if not keep_bos:
        model.generation_config.bos_token_id = None
    return model.eval()
