"""Pretrain the toy rectified-flow (SD3-class) text-to-image model of the shapes world, from
scratch, on a CPU.

    python -m mmalign.toy.pretrain_flow --out assets/toy/flow     # about 13 minutes on one core
    python -m mmalign.toy.pretrain_flow --init assets/toy/flow --out NEW --minutes 10

Writes a diffusers ``StableDiffusion3Pipeline`` folder (``transformer/``, ``vae/``,
``text_encoder/``, ``text_encoder_2/``, ``text_encoder_3/``, their tokenizers and
``scheduler/``; safetensors), the layout the image_flow modality loads from ``model.path``.
The classes are those of :mod:`mmalign.models.flow`'s tiny builders (``SD3Transformer2DModel``,
a 16-channel ``AutoencoderKL`` without quant convs, two ``CLIPTextModelWithProjection``, a
``T5EncoderModel``, ``FlowMatchEulerDiscreteScheduler`` with SD3's shift 3.0), at the sizes of
:data:`SIZES`: the tiny builders' context of 16 tokens cuts the world's captions (a byte-level
CLIP spends a token per letter: the longest caption is 32 CLIP tokens and 38 T5 pieces). The
widths were chosen, not searched: a 64-wide, 4-layer transformer learnt the colours in 11
minutes; the tiny builders' 32-wide, 2-layer one was not tried. Two phases:

1. the VAE (32x32 RGB -> 16x16x16) learns to reconstruct single-object scenes exactly as in
   :mod:`~mmalign.toy.pretrain_diffusion`; its latents are then normalised as SD3's are,
   ``(z - shift_factor) * scaling_factor`` with the latent mean and ``1 / std``;
2. the transformer and the three text encoders learn the rectified-flow velocity (Esser et
   al. 2024, arXiv:2403.03206, sec. 3): ``x_t = (1 - t) x_0 + t e``, target ``e - x_0``, at
   logit-normal times shifted by the scheduler's shift (sec. 3.1 and 5.3.2,
   :mod:`mmalign.modalities.denoising.flow_time`), conditioned through the pipeline's own
   ``encode_prompt``, with 10% empty captions so classifier-free guidance works; an
   exponential moving average of the transformer is what is saved.

The captions are the diffusion model's (:func:`~mmalign.toy.pretrain_diffusion.random_prompt`):
the shape always, the colour 60% and the size 50% of the time. So a prompt that names no
colour is drawn in any of the four colours: the unaligned behaviour the ``flow_red`` demo
changes. The shipped model, checked on ``tune`` seeds at 12 sampling steps and guidance 4:
47 of 48 prompts naming a colour drawn in it; 96 colourless prompts drawn red 31, yellow 43,
green 11, blue 8 times (3 empty). Its shapes are blobs more often than the diffusion model's:
colour, which the demo is about, is learnt long before shape.
"""
from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from mmalign.modalities.denoising.flow_time import scheduler_shift
from mmalign.modalities.denoising.targets import flow_noisy_input, flow_velocity
from mmalign.modalities.image_flow.forward import sd3_prediction
from mmalign.models.diffusion import tiny_clip_tokenizer
from mmalign.models.flow import FlowParts, load_flow_parts, load_transformer, tiny_t5_tokenizer
from mmalign.toy import shapes
from mmalign.toy.pretrain_diffusion import (MAX_TOKENS, arguments, ema_update, latent_pool, log, random_prompt,
                                            scene_pool, train_vae)

#: T5 tokens per caption: the world's longest caption is 38 single-character pieces with ``</s>``
T5_TOKENS = 40
#: widths and depths of the parts (the transformer's inner width is ``heads * head_dim``)
SIZES = {"transformer_layers": 4, "heads": 4, "head_dim": 16, "clip_width": 32, "t5_width": 64,
         "vae_channels": (8, 16)}
#: the shift of SD3's scheduler; training times and the sampler's steps both use it
SHIFT = 3.0


def clip_encoder(width: int, vocab: int) -> CLIPTextModelWithProjection:
    """A two-layer CLIP text encoder with a projection, reading :data:`MAX_TOKENS` tokens."""
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, projection_dim=width, hidden_act="gelu",
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1))


def t5_encoder(width: int, vocab: int) -> T5EncoderModel:
    """A two-layer T5 encoder over the character-level tiny T5 tokenizer."""
    return T5EncoderModel(T5Config(
        vocab_size=vocab, d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))


def build_parts(seed: int) -> tuple[SD3Transformer2DModel, FlowParts]:
    """A randomly initialised SD3-class transformer and its parts, sized for the shapes world.

    SD3's conditioning fixes the widths' relations: both CLIPs' hidden states side by side must
    fit the T5 width (the pipeline pads them to it), the pooled input is both projections."""
    torch.manual_seed(seed)
    tokenizers = [tiny_clip_tokenizer(), tiny_clip_tokenizer()]
    for tok in tokenizers:
        tok.model_max_length = MAX_TOKENS
    t5_tokenizer = tiny_t5_tokenizer()
    t5_tokenizer.model_max_length = T5_TOKENS  # the modality's default caption length
    vocab, clip_width, t5_width = len(tokenizers[0]), SIZES["clip_width"], SIZES["t5_width"]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=SIZES["vae_channels"],
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=shapes.SIZE, scaling_factor=1.0, shift_factor=0.0,
        use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(
        transformer=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), vae=vae,
        text_encoder=clip_encoder(clip_width, vocab), tokenizer=tokenizers[0],
        text_encoder_2=clip_encoder(clip_width, vocab), tokenizer_2=tokenizers[1],
        text_encoder_3=t5_encoder(t5_width, len(t5_tokenizer)), tokenizer_3=t5_tokenizer)
    inner = SIZES["heads"] * SIZES["head_dim"]
    transformer = SD3Transformer2DModel(
        sample_size=shapes.SIZE // 2, patch_size=2, in_channels=16, out_channels=16,
        num_layers=SIZES["transformer_layers"], attention_head_dim=SIZES["head_dim"], num_attention_heads=SIZES["heads"],
        joint_attention_dim=t5_width, caption_projection_dim=inner, pooled_projection_dim=2 * clip_width,
        pos_embed_max_size=shapes.SIZE // 4)
    return transformer, FlowParts("sd3", pipe)


def text_encoders(parts: FlowParts) -> list[torch.nn.Module]:
    return [parts.pipeline.text_encoder, parts.pipeline.text_encoder_2, parts.pipeline.text_encoder_3]


def flow_times(scheduler, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` training times: logit-normal ``u`` (mean 0, std 1), shifted as the scheduler
    shifts its sampling steps, so training and sampling weight the path alike."""
    return scheduler_shift(scheduler.config)(torch.sigmoid(torch.randn(count, generator=gen)))


def train_transformer(transformer: SD3Transformer2DModel, parts: FlowParts, objects: list[shapes.Shape],
                      pixels: torch.Tensor, seconds: float, log, lr: float = 1e-3,
                      batch_size: int = 32) -> SD3Transformer2DModel:
    """Rectified-flow training for ``seconds`` of wall time; returns the EMA transformer."""
    means, stds = latent_pool(parts.vae, pixels)
    config = parts.vae.config
    ema = copy.deepcopy(transformer).requires_grad_(False)
    encoders = text_encoders(parts)
    params = list(transformer.parameters()) + [p for m in encoders for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng, gen = random.Random(0), torch.Generator().manual_seed(1)
    for module in [transformer, *encoders]:
        module.requires_grad_(True).train()
    start, step = time.time(), 0
    while time.time() - start < seconds:
        index = torch.randint(0, len(objects), (batch_size,), generator=gen)
        prompts = ["" if rng.random() < 0.1 else random_prompt(objects[i], rng) for i in index.tolist()]
        latents = means[index] + stds[index] * torch.randn(means[index].shape, generator=gen)
        x0 = (latents - config.shift_factor) * config.scaling_factor
        noise = torch.randn(x0.shape, generator=gen)
        t = flow_times(parts.scheduler, batch_size, gen)
        # the pipeline's own conditioning, with gradients: the encoders learn with the transformer
        embeds, _, pooled, _ = parts.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
            max_sequence_length=T5_TOKENS)
        pred = sd3_prediction(transformer, flow_noisy_input(x0, noise, t), t, embeds, pooled)
        loss = F.mse_loss(pred, flow_velocity(x0, noise))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update(ema, transformer, step, max_decay=0.998)  # a short run: a shorter average
        if step % 100 == 0:
            log(f"transformer step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        step += 1
    log(f"transformer trained {step} steps")
    for module in encoders:
        module.eval().requires_grad_(False)
    return ema.eval()


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, "transformer", 11.0, 300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    # --threads stays 1 by default: on a CPU shared with other work, a step on two threads was
    # measured several times slower than on one whenever another process was busy
    torch.set_num_threads(args.threads)

    objects, pixels = scene_pool(args.scenes)
    if args.init:
        transformer, parts = load_transformer(args.init), load_flow_parts(args.init)
        parts.vae.requires_grad_(False).eval()
    else:
        transformer, parts = build_parts(args.seed)
        train_vae(parts.vae, pixels, args.vae_steps, log)
    ema = train_transformer(transformer, parts, objects, pixels, args.minutes * 60, log, lr=args.lr,
                            batch_size=args.batch_size)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    parts.with_transformer(ema).save_pretrained(args.out, safe_serialization=True)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
