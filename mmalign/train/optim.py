"""Optimisers and learning-rate schedules named in a recipe."""
from __future__ import annotations

import math

import torch
from torch import nn

from mmalign.errors import ConfigError


def trainable_parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    seen: set[int] = set()
    params = []
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def make_optimizer(params: list[nn.Parameter], name: str, lr: float, weight_decay: float):
    if not params:
        raise ConfigError("the policy has no trainable parameters (is every weight frozen?)")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **_fast_path(params))
    if name == "adafactor":
        # as the Diffusion-DPO SDXL run uses it: a fixed learning rate, no parameter scaling,
        # update clipping at 1 (transformers' Adafactor; torch's has no clip threshold)
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False, clip_threshold=1.0)
    if name == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ConfigError("train.optimizer 'adamw_8bit' needs bitsandbytes (pip install "
                              "bitsandbytes) and a CUDA device; use 'adamw' here") from exc
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer '{name}'; use adamw, adafactor or adamw_8bit")


def _fast_path(params: list[nn.Parameter]) -> dict[str, bool]:
    """AdamW over all parameters at once instead of torch's CPU default, a Python loop over
    them: the fused kernel where every weight is a floating-point CUDA tensor (as TRL uses),
    else the foreach path. On a CPU, over the LoRA weights of the tiny LLaVA, foreach took half
    the loop's time with bitwise the same weights, and the fused CPU kernel no less than the
    loop (``python benchmarks/optimizer_step.py``, benchmarks/results/optimizer_step.json).
    Weights are still on the CPU when the optimizer is made, so CUDA's presence decides (the
    fused kernel runs on a CPU too, should ``train.cpu`` keep them there)."""
    on_cuda = torch.cuda.is_available() and all(p.is_floating_point() for p in params)
    return {"fused": True} if on_cuda else {"foreach": True}


def make_scheduler(optimizer, name: str, warmup: int, total: int):
    """Linear warmup, then constant, linear decay to 0, or cosine decay to 0."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
