"""Seconds per tiny-SDXL Diffusion-DPO step: mmalign's trainer against a naive per-step
pipeline and against the physical limit, the three run in lockstep, in repeated runs.

    python benchmarks/peers/sdxl_naive.py [--repeats 5] [--steps 32] [--batch 4] [--threads 2] [--resolution 64]

The model is the tiny SDXL whose VAE encoder and text encoders weigh, next to its UNet, what
SDXL's weigh next to SDXL's UNet (``mmalign.models.diffusion.SDXL_PROPORTIONS``), at 64 px, on
64 Pick-a-Pic-style pairs (JPEG bytes, 80 px, so every path resizes and crops), batch 4 (a run
takes 32 steps, two epochs, each with its own draws), LoRA r 4 (alpha 4) on
``to_q / to_k / to_v / to_out.0``, DPO beta 5000, AdamW (foreach), the same threads
everywhere. Arms:

* ``mmalign``: ``mmalign.train.run.train`` with the frozen-work cache on (the VAE and both text
  encoders run once per pair, before training) and the live reference = the same UNet with its
  adapters off. A step: collate from the cache, draw, policy forward, reference forward,
  loss, backward, clipping at 1.0, AdamW, a metrics line.
* ``naive``: what diffusers' research example ``train_diffusion_dpo_sdxl.py`` does at every
  step, written here in plain torch + diffusers: decode both JPEGs, resize and crop, VAE-encode
  both images, run both text encoders, noise, policy forward, reference forward with the
  adapters off (diffusers' ``disable_adapters`` / ``enable_adapters``, as the example does),
  the loss, backward, clipping at 1.0, AdamW.
* ``limit``: only the work no trainer can avoid, on latents and embeddings precomputed from
  mmalign's own draws and cache: policy UNet forward and backward over winners and losers, one
  reference forward with the adapters off (one flag per LoRA layer, the cheapest switch), AdamW.
  Before anything is timed, the limit's loss on a batch is asserted equal (to 1e-6) to the
  loss mmalign's trainer computes on the same batch (same latents, noise, timesteps and
  conditioning, taken from the plugin's draw and frozen inputs; LoRA weights set away from
  zero so the check is not of two log 2s).

Each repetition is one mmalign training run; after each of its steps one limit step and one
naive step run (:class:`Lockstep`: the machine's load comes in phases of seconds, and arms run
one after the other would each meet a different one). A step's seconds: mmalign's from the
moment the others hand back to its next step end, the others' from start to end; each arm's
first step is left out (warm-up). Per repetition the median step, across repetitions the
median and min-max. Writes benchmarks/results/peers_sdxl.json (``--out`` elsewhere): mmalign /
limit (target <= 1.05) and mmalign / naive (target <= 0.85), each as the ratio of medians, the
median and min-max of the per-repetition ratios (the target is read on their median), the same
for each run's fastest step, and per repetition the median of step-by-step ratios.
"""
from __future__ import annotations

import os

# Read by the OpenMP runtime when torch loads, so set before it. On a machine whose cores
# other work also uses, OpenMP workers that spin while they wait stall on a peer the scheduler
# has put aside: two threads ran 20-30x slower than one here. Waiting passively keeps the
# two-thread numbers about the work. A value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import io
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_timing  # noqa: E402

PAIRS = 64
BETA = 5000.0
LR = 1e-5
LORA_RANK = 4
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TARGETS = {"limit": 1.05, "naive": 0.85}
LOSS_ATOL = 1e-6


@dataclass
class Setup:
    """What every arm reads: the pairs file, its rows in memory, and the model's size."""

    data: str
    rows: list[dict]  # caption, jpg_0, jpg_1 (bytes), label_0
    resolution: int
    batch: int
    builder_args: dict
    device: str = "cpu"
    mixed_precision: str = "no"
    model_path: str | None = None  # a local diffusers folder instead of the tiny builder (GPU sizes)

    def model_section(self) -> dict:
        """The recipe's model source: the folder, or ``tiny_sdxl`` with :attr:`builder_args`."""
        if self.model_path:
            return {"path": self.model_path}
        return {"builder": "tiny_sdxl", "builder_args": self.builder_args}

    def unet(self):
        """A fresh UNet of this model (weights fixed by the builder's seed or the folder)."""
        from mmalign.models.diffusion import load_unet, tiny_sdxl

        return load_unet(self.model_path) if self.model_path else tiny_sdxl(**self.builder_args)

    def parts(self):
        """The frozen parts: VAE, both text encoders and tokenizers, the DDPM scheduler."""
        from mmalign.models.diffusion import load_parts, tiny_sdxl_parts

        return load_parts(self.model_path) if self.model_path else tiny_sdxl_parts(**self.builder_args)


def _jpeg(seed: int, size: int) -> bytes:
    """A smooth random picture (a low-resolution random field, upsampled) with some noise, as
    JPEG: realistic enough that decoding costs what a photo of that size costs."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    pixels = (smooth + 0.08 * torch.randn(3, size, size, generator=gen)).clamp(0, 1)
    buf = io.BytesIO()
    Image.fromarray((pixels.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_pairs(folder: Path, pairs: int, size: int) -> tuple[str, list[dict]]:
    """``pairs`` Pick-a-Pic rows (``caption``, ``jpg_0``, ``jpg_1``, ``label_0`` = 1: image 0
    wins) as parquet, and the same rows in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"caption": f"a red cat {i}", "jpg_0": _jpeg(2 * i, size), "jpg_1": _jpeg(2 * i + 1, size),
             "label_0": 1.0} for i in range(pairs)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path), rows


def builder_args(overrides: dict | None = None) -> dict:
    """``SDXL_PROPORTIONS`` as recipe ``builder_args`` (lists, as JSON and YAML give them),
    with ``overrides`` on top."""
    from mmalign.models.diffusion import SDXL_PROPORTIONS

    args = {k: list(v) if isinstance(v, tuple) else v for k, v in SDXL_PROPORTIONS.items()}
    return {**args, **(overrides or {})}


# -- mmalign --------------------------------------------------------------------------------

def mmalign_recipe(setup: Setup, steps: int, out: str) -> dict:
    """The trainer's recipe: cache on, LoRA, live reference with the adapters off."""
    return {
        "model": {"modality": "image_diffusion", **setup.model_section(),
                  "lora": {"r": LORA_RANK, "alpha": LORA_RANK, "dropout": 0.0},
                  "options": {"resolution": setup.resolution, "cache": True}},
        "data": {"train": setup.data, "schema": "pickapic"},
        "objective": {"name": "dpo", "params": {"beta": BETA}},
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": setup.batch, "max_steps": steps, "shuffle": False,
                  "cpu": setup.device == "cpu", "optimizer": "adamw", "lr": LR, "weight_decay": 0.0,
                  "scheduler": "constant", "max_grad_norm": 1.0, "mixed_precision": setup.mixed_precision},
        "eval": {"every": 0},
        "logging": {"output_dir": out, "every": 1, "tensorboard": False, "progress": False},
    }


def run_mmalign(setup: Setup, steps: int, clock: peer_timing.StepClock) -> None:
    """One mmalign training run, timed by ``clock``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = mmalign_recipe(setup, steps, str(Path(tmp) / "run"))
        peer_timing.mmalign_session(raw, "<peers sdxl>", setup.device, clock)
    assert len(clock.ends) == steps, f"mmalign: {len(clock.ends)} step ends for {steps} steps"


# -- the loss, as the limit and the naive path compute it --------------------------------

def dpo_loss(pred: torch.Tensor, ref: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908, eq. 14) on ``[2B, ...]``
    predictions laid out winners then losers: ``s = -0.5 * mse`` per image, and
    ``-log sigmoid(beta * ((s_w - s_w_ref) - (s_l - s_l_ref)))``, averaged over pairs. The
    operations run in the order mmalign's surrogate and DPO objective run them, so the two
    agree to float32 rounding of identical operations, not merely to a tolerance that beta
    5000 would amplify."""
    dims = tuple(range(1, pred.ndim))
    s = -0.5 * (pred.float() - target.float()).pow(2).mean(dim=dims)
    s_ref = -0.5 * (ref.float() - target.float()).pow(2).mean(dim=dims)
    b = s.shape[0] // 2
    chosen, rejected = beta * (s[:b] - s_ref[:b]), beta * (s[b:] - s_ref[b:])
    return (-F.logsigmoid(chosen - rejected)).mean()


def unet_forward(unet, x_t, t, embeds, pooled, time_ids):
    return unet(x_t, t, encoder_hidden_states=embeds,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


@contextlib.contextmanager
def diffusers_adapters_off(unet):
    """The reference switch of the research example: diffusers' ``disable_adapters`` /
    ``enable_adapters``, which walk every module of the UNet each time."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


class AdaptersOff:
    """The cheapest reference switch: the UNet's LoRA layers, found once, and the flag each
    one reads in its forward (``peft``'s ``BaseTunerLayer._disable_adapters``), set and
    cleared. Under ``no_grad`` nothing else needs to change; the exactness check shows that
    the forward it gives is the base model's (it equals mmalign's, made with peft's own toggles)."""

    def __init__(self, unet):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        assert self.layers and all(hasattr(m, "_disable_adapters") for m in self.layers)

    @contextlib.contextmanager
    def __call__(self, unet):
        for layer in self.layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer in self.layers:
                layer._disable_adapters = False


def pair_loss(unet, scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
              pooled: torch.Tensor, time_ids: torch.Tensor, beta: float = BETA,
              adapters_off=diffusers_adapters_off) -> torch.Tensor:
    """One Diffusion-DPO loss: ``x0`` ``[B, 2, C, h, w]`` (winner first) noised with the pair's
    shared ``noise`` and ``t``; the policy forward over winners and losers with gradient, the
    reference (``adapters_off(unet)``) without."""
    latents = torch.cat([x0[:, 0], x0[:, 1]])
    eps, steps = torch.cat([noise, noise]), torch.cat([t, t])
    x_t = scheduler.add_noise(latents, eps, steps)
    cond = (embeds.repeat(2, 1, 1), pooled.repeat(2, 1), time_ids.repeat(2, 1))
    pred = unet_forward(unet, x_t, steps, *cond)
    with torch.no_grad(), adapters_off(unet):
        ref = unet_forward(unet, x_t, steps, *cond)
    return dpo_loss(pred, ref, eps, beta)


def lora_unet(setup: Setup, init: str | bool = "gaussian"):
    """The setup's UNet with a LoRA adapter added the diffusers way (``add_adapter``)."""
    from peft import LoraConfig

    unet = setup.unet()
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights=init,
                                target_modules=LORA_TARGETS))
    return unet.to(setup.device)


def autocast(setup: Setup):
    """bf16 autocast on CUDA when the run is bf16, as accelerate wraps mmalign's forward."""
    if setup.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adamw(unet, device: str) -> torch.optim.Optimizer:
    params = [p for p in unet.parameters() if p.requires_grad]
    fast = {"fused": True} if device == "cuda" else {"foreach": True}  # as mmalign's trainer picks
    return torch.optim.AdamW(params, lr=LR, weight_decay=0.0, **fast)


# -- the physical limit ---------------------------------------------------------------------

def plugin_inputs(modality, batch, draw) -> dict[str, torch.Tensor]:
    """The UNet's inputs of one batch and draw as mmalign's plugin makes them: the latent sample
    of each image (from the cached posterior and the draw's ``latent_eps``), the pair's noise and
    timestep, and the cached text conditioning."""
    from mmalign.modalities.image_diffusion import conditioning
    from mmalign.modalities.image_diffusion.surrogate import latents_of

    frozen = conditioning.from_cache(batch.inputs, draw, batch.inputs["empty"])
    return {"x0": latents_of(frozen, draw, modality.parts.vae.config.scaling_factor), "noise": draw["noise"],
            "t": draw["timesteps"], "embeds": frozen.prompt_embeds, "pooled": frozen.pooled,
            "time_ids": frozen.time_ids}


def perturb_lora(model: torch.nn.Module, scale: float = 0.05) -> None:
    """Set every LoRA weight from a fixed generator, so policy and reference differ."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def exactness(setup: Setup, folder: Path) -> dict:
    """mmalign's trainer loss on the first batch and the limit loop's on the same inputs:
    asserted equal to :data:`LOSS_ATOL`. Returns both, the gap, and the limit's UNet (weights
    equal to the trainer's policy) with the per-step inputs of the first ``steps`` batches."""
    from mmalign import config
    from mmalign.train.run import build, forward

    raw = mmalign_recipe(setup, 1, str(folder / "exactness"))
    s = build(config.from_dict(raw, source="<peers sdxl exactness>"))
    try:
        s.policy.to(s.accelerator.device)  # the trainer's loop would place it (accelerate's prepare)
        perturb_lora(s.policy)
        records = s.train_records[:setup.batch]
        loss_mm, _ = forward(s, s.scorer, records, epoch=0, step=1, training=True)
        batch = s.modality.collate(records)
        draw = s.modality.draw(batch, s.recipe.train.seed, s.policy)
        unet = lora_unet(setup)
        unet.load_state_dict(s.policy.state_dict())  # strict: same layers, same names, same weights
        inputs = {k: v.to(setup.device) for k, v in plugin_inputs(s.modality, batch, draw).items()}
        loss_limit = pair_loss(unet, s.modality.parts.scheduler, **inputs, adapters_off=AdaptersOff(unet))
    finally:
        if s.lock is not None:
            s.lock.release()
    gap = abs(float(loss_mm) - float(loss_limit))
    assert gap <= LOSS_ATOL, f"limit loss {float(loss_limit)} != mmalign loss {float(loss_mm)} (gap {gap})"
    assert abs(float(loss_mm) - math.log(2)) > 1e-3, "the check compares two log 2s: the LoRA weights are zero"
    return {"mmalign_loss": float(loss_mm), "limit_loss": float(loss_limit), "abs_gap": gap, "atol": LOSS_ATOL}


def limit_inputs(setup: Setup, folder: Path, steps: int) -> list[dict[str, torch.Tensor]]:
    """Per-step inputs of the limit loop: the batches, epochs and draws mmalign's trainer uses
    at steps ``0 .. steps-1`` (rows in file order, seed 0), from the plugin's own cache."""
    from mmalign.modalities.image_diffusion import ImageDiffusionModality
    from mmalign.modality import ModelSpec

    modality = ImageDiffusionModality(resolution=setup.resolution, cache=True)
    modality.load_policy(ModelSpec(**setup.model_section()))
    records = modality.prepare(modality.load_records(setup.data, "pickapic"), str(folder / "limit-cache"))
    per_epoch = len(records) // setup.batch
    out = []
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        batch = modality.collate(records[k * setup.batch:(k + 1) * setup.batch])
        batch.epoch = epoch
        draw = modality.draw(batch, 0, None)
        out.append({k: v.to(setup.device) for k, v in plugin_inputs(modality, batch, draw).items()})
    return out


def limit_stepper(setup: Setup, unet, scheduler, inputs: list[dict]) -> Callable[[], float]:
    """A function that runs the limit loop's next step (forward, reference forward, backward,
    AdamW) and returns its seconds."""
    optimizer = adamw(unet, setup.device)
    switch = AdaptersOff(unet)
    batches = itertools.cycle(inputs)

    def step() -> float:
        start = time.perf_counter()
        with autocast(setup):
            loss = pair_loss(unet, scheduler, **next(batches), adapters_off=switch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # the step is over when its loss is known (and, on CUDA, the device is done)
        return time.perf_counter() - start

    return step


# -- the naive path ---------------------------------------------------------------------------

def decode_pair(row: dict, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images of a row decoded from JPEG, short side resized to ``resolution`` (bilinear),
    center-cropped, in [-1, 1] ``[2, 3, R, R]``; and SDXL's time ids (original size, crop
    top-left, target size) ``[6]``."""
    import numpy as np
    from PIL import Image

    pixels, ids = [], None
    for key in ("jpg_0", "jpg_1"):
        image = Image.open(io.BytesIO(row[key])).convert("RGB")
        w, h = image.size
        scale = resolution / min(w, h)
        image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BILINEAR)
        top, left = round((image.height - resolution) / 2), round((image.width - resolution) / 2)
        image = image.crop((left, top, left + resolution, top + resolution))
        pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0)
        if ids is None:
            ids = torch.tensor([h, w, top, left, resolution, resolution], dtype=torch.float32)
    return torch.stack(pixels), ids


@torch.no_grad()
def encode_text(parts, captions: list[str], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's text conditioning: both encoders' penultimate hidden states side by side, and the
    second encoder's pooled projection."""
    hidden, pooled = [], None
    for tokenizer, encoder in ((parts.tokenizer, parts.text_encoder), (parts.tokenizer_2, parts.text_encoder_2)):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled


def naive_step(unet, parts, rows: list[dict], setup: Setup, gen: torch.Generator, optimizer) -> torch.Tensor:
    """Everything from the JPEG bytes to the optimizer update, as the research example does it."""
    decoded = [decode_pair(row, setup.resolution) for row in rows]
    pixels = torch.stack([d[0] for d in decoded]).to(setup.device)  # [B, 2, 3, R, R]
    time_ids = torch.stack([d[1] for d in decoded]).to(setup.device)
    b = len(rows)
    with autocast(setup):
        with torch.no_grad():
            both = torch.cat([pixels[:, 0], pixels[:, 1]])  # winners, then losers
            posterior = parts.vae.encode(both.to(parts.vae.dtype)).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(both)
            latents = latents * parts.vae.config.scaling_factor
        embeds, pooled = encode_text(parts, [row["caption"] for row in rows], setup.device)
        noise = torch.randn(latents[:b].shape, generator=gen).to(setup.device)
        t = torch.randint(0, parts.scheduler.config.num_train_timesteps, (b,), generator=gen).to(setup.device)
        x0 = torch.stack([latents[:b], latents[b:]], dim=1)
        loss = pair_loss(unet, parts.scheduler, x0, noise, t, embeds, pooled, time_ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in unet.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def naive_stepper(setup: Setup) -> Callable[[], float]:
    """A function that runs the naive path's next step on the same pairs, model sizes and
    LoRA, and returns its seconds."""
    parts = setup.parts()
    for module in parts.frozen_modules():
        module.requires_grad_(False).eval().to(setup.device)
    unet = lora_unet(setup)
    optimizer = adamw(unet, setup.device)
    gen = torch.Generator().manual_seed(0)
    per_epoch = len(setup.rows) // setup.batch
    batches = itertools.cycle(range(per_epoch))

    def step() -> float:
        start = time.perf_counter()
        k = next(batches)
        float(naive_step(unet, parts, setup.rows[k * setup.batch:(k + 1) * setup.batch], setup, gen, optimizer))
        return time.perf_counter() - start

    return step


# -- the comparison ------------------------------------------------------------------------

class Lockstep(peer_timing.StepClock):
    """mmalign's step clock that, at the end of each mmalign step, runs one step of every other
    arm (in an order rotated each time) before the trainer goes on.

    The machine this runs on is shared, and its load comes in phases of seconds that slow
    every step two- or threefold; arms timed one after the other land in different phases.
    In lockstep each arm's steps sit next to the others' and every phase falls on all of them.
    An mmalign step is timed from the moment the other arms hand the trainer back to the end
    of its next step, which holds everything the loop does between two step ends; the other
    arms' steps are timed from start to end."""

    def __init__(self, others: dict[str, Callable[[], float]]):
        super().__init__()
        self.others = others
        self.resumed: list[float] = []
        self.seconds: dict[str, list[float]] = {name: [] for name in others}

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        super().log(values, step, **kwargs)
        names = list(self.others)
        shift = len(self.ends) % len(names)
        for name in names[shift:] + names[:shift]:
            self.seconds[name].append(self.others[name]())
        self.resumed.append(time.perf_counter())

    def steps(self) -> dict[str, list[float]]:
        """Seconds of every step after each arm's first (warm-up) one."""
        mmalign = [end - start for start, end in zip(self.resumed, self.ends[1:])]
        return {"mmalign": mmalign, **{name: seconds[1:] for name, seconds in self.seconds.items()}}


def lockstep(setup: Setup, folder: Path, repeats: int, steps: int) -> dict[str, dict[str, list[float]]]:
    """``{"median": {arm: [per repetition]}, "fastest": {...}, "paired": {ratio: [...]}}``:
    ``repeats`` mmalign runs of ``steps`` steps, each with the limit and the naive path stepped
    in lockstep; ``paired``: per repetition, the median over steps of an mmalign step's seconds
    over those of the other arm's step that ran right after it (the same moment's load)."""
    limit_unet = lora_unet(setup)
    perturb_lora(limit_unet)
    scheduler = setup.parts().scheduler
    inputs = limit_inputs(setup, folder, steps)
    out: dict[str, dict[str, list[float]]] = {"median": {}, "fastest": {}, "paired": {}}
    for rep in range(repeats):
        clock = Lockstep({"limit": limit_stepper(setup, limit_unet, scheduler, inputs),
                          "naive": naive_stepper(setup)})
        run_mmalign(setup, steps, clock)
        seconds_of = clock.steps()
        for arm, seconds in seconds_of.items():
            out["median"].setdefault(arm, []).append(statistics.median(seconds))
            out["fastest"].setdefault(arm, []).append(min(seconds))
        for arm in ("limit", "naive"):  # each mmalign step over the other arm's step right after it
            ratios = [a / b for a, b in zip(seconds_of["mmalign"], seconds_of[arm])]
            out["paired"].setdefault(f"mmalign_over_{arm}", []).append(statistics.median(ratios))
        print(f"  repetition {rep + 1}/{repeats}: " + ", ".join(
            f"{arm} {out['median'][arm][-1]:.4f} s/step" for arm in out["median"]), flush=True)
    return out


def compare(setup: Setup, folder: Path, repeats: int, steps: int, threads: int) -> dict:
    """The exactness check, then ``repeats`` lockstep repetitions, and the two ratios."""
    load_before = os.getloadavg()
    torch.set_num_threads(threads)
    check = exactness(setup, folder)
    stats = lockstep(setup, folder, repeats, steps)
    per_rep = stats["median"]

    def ratios(times: dict[str, list[float]], targets: dict[str, float | None]) -> dict:
        return {"mmalign_over_limit": peer_timing.ratio(times["mmalign"], times["limit"], targets["limit"]),
                "mmalign_over_naive": peer_timing.ratio(times["mmalign"], times["naive"], targets["naive"])}

    return {
        "what": "seconds per Diffusion-DPO step on the SDXL-proportioned tiny SDXL: mmalign / physical limit, "
                "mmalign / naive per-step pipeline",
        "device": setup.device, "threads": threads, "repeats": repeats, "steps": steps, "batch_size": setup.batch,
        "pairs": len(setup.rows), "resolution": setup.resolution,
        "image_size": setup.resolution + setup.resolution // 4,
        "model": setup.model_section(),
        "lora": {"r": LORA_RANK, "alpha": LORA_RANK, "targets": LORA_TARGETS}, "beta": BETA,
        "mixed_precision": setup.mixed_precision,
        "statistic": "arms in lockstep (a limit and a naive step after each mmalign step); per repetition: "
                     "median seconds of a step (each arm's first excluded); across repetitions: median, "
                     "min-max; fastest_step_*: the shortest step instead",
        "exactness": check,
        "seconds_per_step": per_rep,
        "median": {k: peer_timing.spread(v)["median"] for k, v in per_rep.items()},
        "min_max": {k: peer_timing.spread(v)["min_max"] for k, v in per_rep.items()},
        "ratios": ratios(per_rep, TARGETS),
        "fastest_step_seconds": stats["fastest"],
        "fastest_step_ratios": ratios(stats["fastest"], dict.fromkeys(TARGETS)),
        "paired_step_ratios": {name: {"per_repetition": values, "median": statistics.median(values),
                                      "min_max": [min(values), max(values)]}
                               for name, values in stats["paired"].items()},
        "environment": peer_timing.environment(load_before),
        "versions": peer_timing.versions(),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32, help="steps per run (16 = one epoch of 64 pairs at batch 4)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=PAIRS)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--bf16", action="store_true", help="mixed precision bf16 (CUDA)")
    ap.add_argument("--builder-args", type=json.loads, default={}, help="JSON overrides of SDXL_PROPORTIONS")
    ap.add_argument("--model-path", default=None, help="a local diffusers SDXL folder instead of the tiny builder")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/peers_sdxl.json)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, rows = write_pairs(folder / "data", args.pairs, args.resolution + args.resolution // 4)
        setup = Setup(data, rows, args.resolution, args.batch, builder_args(args.builder_args), args.device,
                      "bf16" if args.bf16 else "no", args.model_path)
        result = compare(setup, folder, args.repeats, args.steps, args.threads)
    path = peer_timing.write(result, "peers_sdxl.json", args.out)
    summary = {k: {m: v[m] for m in ("median_ratio", "median_of_ratios", "min_max", "target", "met")}
               for k, v in result["ratios"].items()}
    paired = {k: {m: v[m] for m in ("median", "min_max")} for k, v in result["paired_step_ratios"].items()}
    print(json.dumps({"exactness": result["exactness"], "ratios": summary, "paired_step_ratios": paired}, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
