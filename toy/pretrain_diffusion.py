"""Pretrain the toy text-to-image model of the shapes world, from scratch, on a CPU.

    python -m mmalign.toy.pretrain_diffusion --out assets/toy/diffusion --minutes 20
    python -m mmalign.toy.pretrain_diffusion --init assets/toy/diffusion --out NEW --minutes 20

Writes a diffusers ``StableDiffusionPipeline`` folder (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, safetensors), the same layout the image_diffusion modality
loads from ``model.path``. Two phases:

1. the VAE (``AutoencoderKL``, 32x32 RGB -> 4x16x16) learns to reconstruct single-object
   scenes (MSE plus a small KL, as an SD-style autoencoder without the adversarial term);
   its ``scaling_factor`` is then set to ``1 / std`` of the latents, as Rombach et al. 2022
   (arXiv:2112.10752, sec. G) did for SD;
2. the UNet and the CLIP text encoder learn epsilon prediction on SD's scaled-linear DDPM
   schedule, with 10% empty captions so classifier-free guidance works; an exponential
   moving average of the weights is what is saved.

Captions name the shape always, the colour 60% and the size 50% of the time, in one of
:data:`TEMPLATES`. So a prompt that names no colour is drawn in any of the four colours
about equally often: the unaligned behaviour the ``diffusion_red`` demo changes.
"""
from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from mmalign.models.diffusion import DiffusionParts, load_parts, load_unet, save_parts, tiny_clip_tokenizer
from mmalign.toy import shapes

MAX_TOKENS = 32
TEMPLATES = ("a {}", "a picture of a {}", "an image of a {}", "a drawing of a {}", "one {}")
#: templates the demo trains on; the others are held out for measurement
TRAIN_TEMPLATES = TEMPLATES[:3]
HELDOUT_TEMPLATES = TEMPLATES[3:]


def prompt_for(obj: shapes.Shape, template: str, colour: bool, size: bool) -> str:
    """The caption of a single object: ``a drawing of a small red circle``."""
    words = [w for w, keep in ((obj.size, size), (obj.colour, colour)) if keep] + [obj.shape]
    return template.format(" ".join(words))


def random_prompt(obj: shapes.Shape, rng: random.Random) -> str:
    return prompt_for(obj, rng.choice(TEMPLATES), rng.random() < 0.6, rng.random() < 0.5)


def build_parts(seed: int) -> tuple[UNet2DConditionModel, DiffusionParts]:
    """A randomly initialised UNet and its frozen parts, sized for the shapes world."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    tokenizer.model_max_length = MAX_TOKENS
    vocab = len(tokenizer)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, projection_dim=64, hidden_act="gelu",
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=shapes.SIZE)
    unet = UNet2DConditionModel(
        sample_size=shapes.SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)
    return unet, DiffusionParts(vae=vae, scheduler=scheduler, tokenizer=tokenizer, text_encoder=text_encoder)


def scene_pool(count: int) -> tuple[list[shapes.Shape], torch.Tensor]:
    """``count`` single-object pretraining scenes and their pixels ``[N, 3, 32, 32]`` in [-1, 1]."""
    objects = [shapes.single_scene(shapes.seed_of("pretrain", i))[0] for i in range(count)]
    pixels = np.stack([np.asarray(shapes.render([o])) for o in objects])
    return objects, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(vae: AutoencoderKL, pixels: torch.Tensor, steps: int, log) -> None:
    """Reconstruction training of ``vae``; then its ``scaling_factor`` is ``1 / std`` of the
    latent means and, for a VAE whose config has a ``shift_factor`` (SD3's), that is their mean."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    vae.train()
    for step in range(steps):
        batch = pixels[torch.randint(0, len(pixels), (32,), generator=gen)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, batch) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log(f"vae step {step} loss {loss.item():.5f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        sample = pixels[:2048]
        latents = torch.cat([vae.encode(sample[i:i + 256]).latent_dist.mean for i in range(0, len(sample), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    if vae.config.shift_factor is not None:  # SD3-class VAEs also centre their latents
        vae.register_to_config(shift_factor=float(latents.mean()))
    log(f"vae scaling_factor {vae.config.scaling_factor:.4f} shift_factor {vae.config.shift_factor}")


@torch.no_grad()
def latent_pool(vae: AutoencoderKL, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's means and standard deviations of every scene, encoded once so
    training draws a fresh latent of each (``mean + std * noise``) without running the VAE."""
    dists = [vae.encode(pixels[i:i + 256]).latent_dist for i in range(0, len(pixels), 256)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def train_unet(unet: UNet2DConditionModel, parts: DiffusionParts, objects: list[shapes.Shape],
               pixels: torch.Tensor, seconds: float, log) -> UNet2DConditionModel:
    """Epsilon-prediction training for ``seconds`` of wall time; returns the EMA model."""
    means, stds = latent_pool(parts.vae, pixels)
    ema = copy.deepcopy(unet).requires_grad_(False)
    params = list(unet.parameters()) + list(parts.text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)
    rng, gen = random.Random(0), torch.Generator().manual_seed(1)
    unet.train()
    parts.text_encoder.train()
    start, step, batch_size = time.time(), 0, 64
    while time.time() - start < seconds:
        index = torch.randint(0, len(objects), (batch_size,), generator=gen)
        prompts = ["" if rng.random() < 0.1 else random_prompt(objects[i], rng) for i in index.tolist()]
        latents = (means[index] + stds[index] * torch.randn(means[index].shape, generator=gen))
        latents = latents * parts.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, parts.scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        ids = parts.tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                              return_tensors="pt").input_ids
        embeds = parts.text_encoder(ids)[0]
        pred = unet(parts.scheduler.add_noise(latents, noise, t), t, embeds).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update(ema, unet, step)
        if step % 200 == 0:
            log(f"unet step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        step += 1
    log(f"unet trained {step} steps")
    parts.text_encoder.eval().requires_grad_(False)
    return ema.eval()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float = 0.999) -> None:
    """Move the moving average ``ema`` of ``model``'s weights one step towards them."""
    decay = min(max_decay, (1 + step) / (10 + step))  # warm-up of the average, as diffusers' EMAModel
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def log(message: str) -> None:
    """A progress line, flushed at once (runs are long and often piped to a file)."""
    print(message, flush=True)


def arguments(doc: str, phase: str, minutes: float, vae_steps: int) -> argparse.ArgumentParser:
    """The options every text-to-image pretraining script of the world takes (``phase``: the
    network trained for ``--minutes``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the diffusers pipeline to")
    parser.add_argument("--minutes", type=float, default=minutes, help=f"wall time of the {phase} phase")
    parser.add_argument("--vae-steps", type=int, default=vae_steps)
    parser.add_argument("--scenes", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default=None,
                        help="continue from this pipeline folder (its VAE is kept: no VAE phase)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "UNet", 20.0, 800).parse_args(argv)
    torch.set_num_threads(args.threads)

    objects, pixels = scene_pool(args.scenes)
    if args.init:
        unet, parts = load_unet(args.init), load_parts(args.init)
        parts.vae.requires_grad_(False).eval()
    else:
        unet, parts = build_parts(args.seed)
        train_vae(parts.vae, pixels, args.vae_steps, log)
    ema = train_unet(unet, parts, objects, pixels, args.minutes * 60, log)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_parts(parts, ema, args.out)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
