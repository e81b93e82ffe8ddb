"""The peer comparisons on one CUDA device, at sizes nearer the real models, in bf16.

    python benchmarks/peers/gpu.py [--repeats 5] [--steps N] [--quick]

Runs ``vlm_trl.py`` and ``sdxl_naive.py`` (same arms, same timing, same checks) with
``--device cuda`` and bf16 autocast on every side:

* VLM: the ``tiny_llava`` builder shaped like LLaVA-1.5 at reduced width: a CLIP ViT at 336 px
  with 14 px patches (576 image tokens per image, as LLaVA-1.5), 12 layers of 512, and a
  Llama decoder of 8 layers of 1024 (LLaVA-1.5-7B: 24 x 1024 vision, 32 x 4096 language).
* SDXL: an SDXL-shaped UNet at half width (blocks of 160 / 320 / 640 channels with 1 / 2 / 4
  transformer layers; SDXL: 320 / 640 / 1280 with 1 / 2 / 10), a four-block VAE (8x down,
  64..256 channels) and two text encoders 384 and 640 wide, saved as a diffusers folder both
  sides load, trained at 256 px.

Writes benchmarks/results/peers_vlm_trl_gpu.json and peers_sdxl_gpu.json (``--out-dir``
elsewhere). Without a CUDA device it says so and exits with status 0: there is nothing to
measure, which is not a failure.
"""
from __future__ import annotations

import os

# Read by the OpenMP runtime when torch loads, so set before it. On a machine whose cores
# other work also uses, OpenMP workers that spin while they wait stall on a peer the scheduler
# has put aside: two threads ran 20-30x slower than one here. Waiting passively keeps the
# two-thread numbers about the work. A value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_timing  # noqa: E402
import sdxl_naive  # noqa: E402
import vlm_trl  # noqa: E402

#: ``tiny_llava_parts`` arguments of the LLaVA-1.5-shaped model
LLAVA_SHAPED = {"hidden_size": 1024, "num_layers": 8, "num_heads": 16, "num_kv_heads": 16,
                "vision_hidden_size": 512, "vision_layers": 12, "image_size": 336, "patch_size": 14}
#: SDXL-shaped widths: UNet blocks, transformer layers per block, VAE blocks, text encoders
SDXL_SHAPED = {"unet_channels": (160, 320, 640), "transformer_layers": (1, 2, 4),
               "vae_channels": (64, 128, 256, 256), "text_widths": (384, 640), "text_layers": (6, 8)}
SDXL_RESOLUTION = 256


def write_sdxl_shaped(folder: Path, resolution: int = SDXL_RESOLUTION, shape: dict | None = None) -> str:
    """A diffusers SDXL pipeline folder with the :data:`SDXL_SHAPED` widths (random weights,
    seed 0) and the tiny byte-level CLIP tokenizers; returns its path."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from mmalign.models.diffusion import DiffusionParts, save_parts, tiny_clip_tokenizer

    shape = {**SDXL_SHAPED, **(shape or {})}
    tokenizer = tiny_clip_tokenizer()
    vocab = len(tokenizer)

    def text_config(width: int, layers: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=4 * width,
                              num_hidden_layers=layers, num_attention_heads=width // 64,
                              max_position_embeddings=tokenizer.model_max_length, projection_dim=width,
                              hidden_act="gelu", bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)

    widths, layers = shape["text_widths"], shape["text_layers"]
    vae_blocks = len(shape["vae_channels"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2 ** (vae_blocks - 1), in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=tuple(shape["unet_channels"]),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=tuple(shape["transformer_layers"]),
        attention_head_dim=tuple(c // 32 for c in shape["unet_channels"]), use_linear_projection=True,
        cross_attention_dim=sum(widths), addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=6 * 256 + widths[1])
    parts = DiffusionParts(
        vae=AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                          block_out_channels=tuple(shape["vae_channels"]),
                          down_block_types=("DownEncoderBlock2D",) * vae_blocks,
                          up_block_types=("UpDecoderBlock2D",) * vae_blocks, layers_per_block=2,
                          sample_size=resolution, scaling_factor=0.13025),
        # SDXL's training schedule: scaled-linear betas over 1000 steps
        scheduler=DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False),
        tokenizer=tokenizer, text_encoder=CLIPTextModel(text_config(widths[0], layers[0])),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(text_config(widths[1], layers[1])),
        force_zeros_for_empty_prompt=True)
    save_parts(parts, unet, str(folder))
    return str(folder)


def run(repeats: int, steps: int | None, out_dir: Path, quick: bool = False) -> dict:
    """Both comparisons on CUDA (``steps``: per run, each script's own default when None);
    ``quick`` shrinks them (one repetition, two steps, eight pairs) to check that they run."""
    if quick:
        sizes = ["--repeats", "1", "--steps", "2", "--pairs", "8"]
    else:
        sizes = ["--repeats", str(repeats), *(["--steps", str(steps)] if steps else [])]
    vlm = vlm_trl.main([*sizes, "--device", "cuda", "--builder-args", json.dumps(LLAVA_SHAPED),
                        "--out", str(out_dir / "peers_vlm_trl_gpu.json")])
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_sdxl_shaped(Path(tmp) / "sdxl")
        sdxl = sdxl_naive.main([*sizes, "--device", "cuda", "--bf16", "--resolution", str(SDXL_RESOLUTION),
                                "--model-path", folder, "--out", str(out_dir / "peers_sdxl_gpu.json")])
    sdxl["model"] = {"shape": SDXL_SHAPED, "resolution": SDXL_RESOLUTION}
    peer_timing.write(sdxl, "peers_sdxl_gpu.json", out_dir / "peers_sdxl_gpu.json")
    return {"vlm": vlm, "sdxl": sdxl}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: each script's own)")
    ap.add_argument("--quick", action="store_true", help="one repetition of two steps: does it run")
    ap.add_argument("--out-dir", default=str(peer_timing.RESULTS))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/peers/gpu.py: no CUDA device here, nothing measured (the CPU comparisons are "
              "benchmarks/peers/vlm_trl.py and benchmarks/peers/sdxl_naive.py)")
        return 0
    run(args.repeats, args.steps, Path(args.out_dir), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
