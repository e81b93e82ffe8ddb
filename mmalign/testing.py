"""The conformance kit for modality plugins: ``check_modality`` and ``mmalign check-plugin``.

It runs a plugin the way the trainer will, on a tiny model and a few rows, and names what
would break a run:

========================  ==================================================================
check                     passes when
========================  ==================================================================
``protocol``              every member of :class:`mmalign.modality.Modality` is there and
                          takes the arguments the core passes
``records``               rows load, each with a distinct ``sample_id``
``shapes``                collate -> draw -> surrogate gives ``[B]`` chosen / rejected and
                          ``[B, U]`` units and masks
``units``                 the masked sum of the units is the total (when units are given)
``gradient``              the surrogate carries a gradient into the model's parameters
``step0``                 a frozen copy (eval mode) scores what the policy (train mode) does,
                          after the trainer's dropout switch: no dropout, no nondeterminism
``draw``                  a row's surrogate does not depend on its batch's order (per-row draws)
``export``                export -> ``load_policy(path=...)`` (or the plugin's
                          ``load_export(out_dir, spec)``) gives the trained surrogate back
``export_lora``           with LoRA: export -> base model + the exported peft adapter gives it back
========================  ==================================================================

A plugin may give ``example(folder) -> dict(spec=ModelSpec, data=path, options=dict,
schema=str | None)``: a tiny model and a few rows of its own, so ``mmalign check-plugin
NAME`` needs no arguments.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mmalign.modality import ModelSpec, protocol_faults
from mmalign.train.first_step import disable_dropout


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'pass' if self.ok else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")


class _Failed(Exception):
    """A check's named failure."""


def check_modality(name: str, *, spec: ModelSpec | None = None, data: str | None = None,
                   options: dict[str, Any] | None = None, schema: str | None = None,
                   lora: bool = True, rows: int = 4, seed: int = 0) -> list[Check]:
    """Run every check on modality ``name``; return one :class:`Check` per check (a failed
    check that later ones depend on stops those). Without ``spec`` / ``data``, the plugin's
    ``example(folder)`` supplies them."""
    from mmalign.registry import modalities

    with tempfile.TemporaryDirectory(prefix="mmalign-check-") as tmp:
        folder = Path(tmp)
        cls = modalities.get(name)
        if spec is None or data is None:
            if not hasattr(cls, "example"):
                return [Check("example", False, f"modality '{name}' has no example(folder) hook: give a "
                                               "model (--builder or --path) and --data")]
            given = cls.example(str(folder))
            spec, data = spec or given["spec"], data or given["data"]
            options = given.get("options", {}) if options is None else options
            schema = schema or given.get("schema")
        kit = _Kit(cls(**(options or {})), spec, data, schema, rows, seed, folder)
        return kit.run(lora)


class _Kit:
    def __init__(self, modality, spec: ModelSpec, data: str, schema: str | None, rows: int, seed: int,
                 folder: Path):
        self.modality, self.spec, self.data, self.schema = modality, spec, data, schema
        self.rows, self.seed, self.folder = rows, seed, folder
        self.results: list[Check] = []

    def run(self, lora: bool) -> list[Check]:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("protocol", self.protocol), ("records", self.records), ("shapes", self.shapes),
            ("units", self.units), ("gradient", self.gradient), ("step0", self.step0),
            ("draw", self.draw_order), ("export", self.export)]
        if lora:
            steps.append(("export_lora", self.export_lora))
        for check, fn in steps:
            try:
                self.results.append(Check(check, True, fn() or ""))
            except _Failed as exc:
                self.results.append(Check(check, False, str(exc)))
                if check in ("protocol", "records", "shapes"):
                    break  # the later checks need these
            except Exception as exc:  # noqa: BLE001 - a plugin's crash is a failed check, named
                self.results.append(Check(check, False, f"{type(exc).__name__}: {exc}"))
                if check in ("protocol", "records", "shapes"):
                    break
        return self.results

    # -- the checks --------------------------------------------------------------------
    def protocol(self) -> str:
        faults = protocol_faults(self.modality)
        if faults:
            raise _Failed("; ".join(faults))
        return ""

    def records(self) -> str:
        from mmalign.train.first_step import check_records

        self.all_records = self.modality.load_records(self.data, self.schema)
        if len(self.all_records) < 2:
            raise _Failed(f"{self.data} gave {len(self.all_records)} records; the kit needs 2 or more")
        check_records(self.all_records, type(self.modality).__name__, self.data)
        self.batch_records = self.all_records[: self.rows]
        return f"{len(self.all_records)} records"

    def shapes(self) -> str:
        self.needs = frozenset({"token_logps"} & set(self.modality.supported_needs))
        self.policy = self.modality.load_policy(self.spec)
        disable_dropout(self.policy)
        sur = self._surrogate(self.policy, self.batch_records)
        b = len(self.batch_records)
        if tuple(sur.chosen.shape) != (b,):
            raise _Failed(f"chosen has shape {tuple(sur.chosen.shape)}, expected ({b},)")
        if sur.rejected is not None and tuple(sur.rejected.shape) != (b,):
            raise _Failed(f"rejected has shape {tuple(sur.rejected.shape)}, expected ({b},)")
        for side in ("chosen", "rejected"):
            units, mask = getattr(sur, f"{side}_units"), getattr(sur, f"{side}_mask")
            if (units is None) != (mask is None):
                raise _Failed(f"{side}_units and {side}_mask must be given together")
            if units is not None and (units.shape[0] != b or units.shape != mask.shape or mask.dtype != torch.bool):
                raise _Failed(f"{side}_units {tuple(units.shape)} and {side}_mask {tuple(mask.shape)} "
                              f"({mask.dtype}) must both be [B, U], the mask bool")
        self.first = sur
        return f"chosen {tuple(sur.chosen.shape)}" + (
            f", units {tuple(sur.chosen_units.shape)}" if sur.chosen_units is not None else "")

    def units(self) -> str:
        sur = self.first
        if sur.chosen_units is None:
            return "no units given (needs token_logps not supported)"
        for side in ("chosen", "rejected"):
            units, mask, total = (getattr(sur, f"{side}_units"), getattr(sur, f"{side}_mask"),
                                  getattr(sur, side))
            if units is None:
                continue
            summed = torch.where(mask, units, torch.zeros_like(units)).sum(-1)
            if not torch.allclose(summed.double(), total.double(), rtol=1e-4, atol=1e-4):
                raise _Failed(f"the masked sum of {side}_units {summed.tolist()} is not {side} {total.tolist()}")
        return ""

    def gradient(self) -> str:
        sur = self._surrogate(self.policy, self.batch_records, grad=True)
        if not sur.chosen.requires_grad:
            raise _Failed("the surrogate carries no gradient (detached, no_grad, or a frozen copy of the model)")
        self.policy.zero_grad(set_to_none=True)
        total = sur.chosen.sum() - (sur.rejected.sum() if sur.rejected is not None else 0)
        total.backward()
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if not grads or all(float(g.abs().sum()) == 0 for g in grads):
            raise _Failed("no parameter of the model received a gradient")
        self.policy.zero_grad(set_to_none=True)
        return f"{len(grads)} parameter tensors get gradients"

    def step0(self) -> str:
        frozen = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.policy.train()
        policy, reference = self._surrogate(self.policy, self.batch_records), self._surrogate(frozen, self.batch_records)
        self._same(policy, reference, "the policy in train mode and its frozen copy in eval mode",
                   "dropout the trainer's switch cannot reach (functional dropout) or a surrogate that is "
                   "not deterministic for a given draw")
        return ""

    def draw_order(self) -> str:
        forward = self._surrogate(self.policy, self.batch_records)
        backward = self._surrogate(self.policy, self.batch_records[::-1])
        flipped = type(forward)(chosen=backward.chosen.flip(0),
                                rejected=None if backward.rejected is None else backward.rejected.flip(0))
        self._same(forward, flipped, "a batch and the same rows in reverse order",
                   "draws made from one generator for the whole batch: use "
                   "mmalign.modality.row_generator(seed, sample_id, epoch) per row")
        return ""

    def export(self) -> str:
        _perturb(p for p in self.policy.parameters() if p.is_floating_point())
        trained = self._surrogate(self.policy, self.batch_records)
        out = self.folder / "export"
        self.modality.export(self.policy, str(out), "# conformance check\n")
        load_export = getattr(self.modality, "load_export", None)
        if load_export is not None:  # an export that needs its base model's frozen parts
            reloaded = load_export(str(out), self.spec)
        else:
            reloaded = self.modality.load_policy(ModelSpec(path=str(out), dtype=self.spec.dtype))
        disable_dropout(reloaded)  # as the trainer does to every model it loads
        self._same(trained, self._surrogate(reloaded, self.batch_records), "the exported model reloaded",
                   "export() must write what load_policy(ModelSpec(path=...)), or the plugin's "
                   "load_export(out_dir, spec), reads back")
        return str(out)

    def export_lora(self) -> str:
        from mmalign.train import adapters

        policy = self.modality.load_policy(self.spec)
        disable_dropout(policy)
        targets = self.modality.lora_target_modules  # may depend on the loaded model
        if not targets:
            return "skipped: the plugin names no LoRA target modules"
        adapters.add_lora(policy, r=4, alpha=8, dropout=0.0,
                          target_modules=targets if isinstance(targets, str) else list(targets))
        _perturb(p for n, p in policy.named_parameters() if "lora_B" in n)
        trained = self._surrogate(policy, self.batch_records)
        out = self.folder / "export_lora"
        self.modality.export(policy, str(out), "# conformance check\n")
        found = sorted(p.parent for p in out.rglob("adapter_config.json"))
        if not found:
            raise _Failed(f"export() of a LoRA policy wrote no peft adapter (adapter_config.json) under {out}")
        base = self.modality.load_policy(self.spec)
        disable_dropout(base)
        adapters.load_named_adapter(base, str(found[0]), adapter_name="exported")
        with adapters.adapter_active(base, "exported"):
            reloaded = self._surrogate(base, self.batch_records)
        self._same(trained, reloaded, f"the base model with the exported adapter {found[0]}",
                   "export() must write the trained LoRA weights as a peft adapter of the base model")
        return str(found[0])

    # -- helpers -----------------------------------------------------------------------
    def _surrogate(self, model: nn.Module, records, grad: bool = False):
        batch = self.modality.collate(records)
        draw = self.modality.draw(batch, self.seed, model)
        with torch.set_grad_enabled(grad):
            return self.modality.surrogate(model, batch, draw, self.needs)

    def _same(self, a, b, what: str, cause: str, tolerance: float = 1e-4) -> None:
        for side in ("chosen", "rejected"):
            x, y = getattr(a, side), getattr(b, side)
            if x is None or y is None:
                continue
            if not torch.allclose(x.detach().double(), y.detach().double(), rtol=tolerance, atol=tolerance):
                gap = (x.detach().double() - y.detach().double()).abs().max().item()
                raise _Failed(f"{side} differs between the model and {what} (largest gap {gap:.3g}): {cause}")


def _perturb(params) -> None:
    """Move weights by a fixed pattern, so an export that loses them shows."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.add_(0.02 * torch.randn(p.shape, generator=gen).to(p.device, p.dtype))


def train_two_processes(recipe, folder: str | Path, timeout: int = 600) -> list[dict]:
    """Train ``recipe`` (a :class:`mmalign.config.Recipe`) under ``torchrun`` with two CPU
    processes (gloo), one thread each; return the train rows of its ``metrics.jsonl``.

    A plugin's test compares them with a one-process run of twice the batch: DDP averages the
    gradients of equal shards, and per-row draws do not depend on the process a row lands in,
    so the curves agree up to float rounding."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    folder = Path(folder)
    path = folder / "two_processes.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe.dump()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mmalign.cli", "train", str(path)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"the two-process run failed:\n{proc.stderr[-3000:]}")
    lines = (Path(recipe.logging.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["split"] == "train"]


def lora_dpo_steps(modality, policy: nn.Module, records: list[dict], steps: int, beta: float,
                   lr: float = 1e-2, rank: int = 4) -> list[float]:
    """Inject a LoRA (``rank``, alpha ``2 * rank``, gaussian init, the plugin's
    ``lora_target_modules``) and take ``steps`` Adam steps of DPO against the same model with
    its adapters off, all on one batch of ``records`` and one draw; the losses. The adapters
    start as a copy of the base, so the first loss is log 2 and, on a fixed draw, the loss
    falls: what a plugin's export test trains before it reloads the export."""
    from peft import LoraConfig

    from mmalign.train.adapters import inject

    inject(policy, LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights="gaussian",
                              target_modules=list(modality.lora_target_modules)))
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    return [dpo_step(modality, policy, modality.collate(records), optimizer, beta).item() for _ in range(steps)]


def dpo_step(modality, policy: nn.Module, batch, optimizer, beta: float) -> "torch.Tensor":
    """One LoRA DPO step on ``batch``: draw, policy surrogate with gradient, reference surrogate
    (the same model, adapters off) without, DPO loss, backward, optimizer step; the loss."""
    import mmalign.objectives as objectives
    from mmalign.train.adapters import adapters_disabled

    draw = modality.draw(batch, 0, policy)
    pol = modality.surrogate(policy, batch, draw, frozenset())
    with torch.no_grad(), adapters_disabled(policy):
        ref = modality.surrogate(policy, batch, draw, frozenset())
    loss = objectives.get("dpo")(pol, ref, beta=beta).loss.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def pair_scores(modality, model: nn.Module, records: list[dict]) -> "torch.Tensor":
    """``[2, B]``: the chosen and rejected surrogates of ``records`` under ``model`` (no
    gradient, draw seed 0): what export tests compare between a model and its reload."""
    with torch.no_grad():
        batch = modality.collate([dict(r) for r in records])
        out = modality.surrogate(model, batch, modality.draw(batch, 0), frozenset())
    return torch.stack([out.chosen, out.rejected])
