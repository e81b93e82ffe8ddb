"""Tiny Wan / CogVideoX builders and the loader of real text-to-video checkpoints.

The tiny builders return the very classes the real models use: Wan (``WanTransformer3DModel``,
the causal ``AutoencoderKLWan``, a ``UMT5EncoderModel``, ``FlowMatchEulerDiscreteScheduler``)
and CogVideoX (``CogVideoXTransformer3DModel``, the causal ``AutoencoderKLCogVideoX``, a
``T5EncoderModel``, ``CogVideoXDDIMScheduler`` with v-prediction), at a size that runs forward
and backward on a CPU in milliseconds. Weights are random and fixed by ``seed``; the
tokenizers are built in memory (no hub).

The frozen parts are kept as the diffusers pipeline itself with no transformer
(:class:`VideoParts`), as the image-flow builders do: its ``encode_prompt`` is the exact text
conditioning the pipeline samples with, and the trained transformer joins the same
components to sample.

Each model declares, in :data:`KINDS` and nowhere else, the layout its transformer takes its
latents in: Wan ``[B, C, T, H, W]`` (what the VAE gives), CogVideoX ``[B, T, C, H, W]``.

Both VAEs are causal in time: ``4k + 1`` frames in, ``k + 1`` latent frames out (the first
frame on its own, then each group of 4); :func:`latent_frames` is that map.

``tiny_wan`` / ``tiny_cogvideox`` build the trainable transformer; ``tiny_wan_parts`` /
``tiny_cogvideox_parts`` the frozen parts that go with it (called with the same arguments).
``load_transformer`` / ``load_video_parts`` read a local diffusers folder of ``WanPipeline`` or
``CogVideoXPipeline``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (AutoencoderKLCogVideoX, AutoencoderKLWan, CogVideoXDDIMScheduler, CogVideoXPipeline,
                       CogVideoXTransformer3DModel, FlowMatchEulerDiscreteScheduler, WanPipeline,
                       WanTransformer3DModel)
from torch import nn
from transformers import T5EncoderModel, UMT5Config, UMT5EncoderModel

from mmalign.errors import ConfigError
from mmalign.models.flow import _t5_config, tiny_t5_tokenizer

#: 9 frames of 32 x 32 px -> 3 latent frames of 4 x 4 (both tiny VAEs: x8 in space, x4 in time)
TINY_SIZE = 32
TINY_FRAMES = 9
TINY_T5_TOKENS = 16
#: the tiny VAEs' latent channels (the real ones have 16)
TINY_LATENT_CHANNELS = 4


@dataclass(frozen=True)
class VideoKind:
    """What the plugin needs to know of a text-to-video model family.

    ``layout``: the axes of the transformer's ``hidden_states`` (``"BCTHW"`` or ``"BTCHW"``);
    the VAE always gives ``[B, C, T, H, W]``. ``objective``: ``"flow"`` (rectified flow,
    velocity target) or ``"v_prediction"`` (the DDPM schedule's v target).
    """

    pipeline: type
    transformer: type
    layout: str
    objective: str
    #: the frame rate the model was trained at (its pipeline's export default)
    fps: int


KINDS = {
    # Wan 2.1 (arXiv:2503.20314): flow matching, UMT5, the transformer takes the VAE's layout
    "wan": VideoKind(WanPipeline, WanTransformer3DModel, layout="BCTHW", objective="flow", fps=16),
    # CogVideoX (arXiv:2408.06072): v-prediction on a DDPM schedule, T5, frames before channels
    "cogvideox": VideoKind(CogVideoXPipeline, CogVideoXTransformer3DModel, layout="BTCHW",
                           objective="v_prediction", fps=8),
}
PIPELINES = {kind: spec.pipeline for kind, spec in KINDS.items()}
TRANSFORMERS = {kind: spec.transformer for kind, spec in KINDS.items()}


def latent_frames(frames: int, temporal_factor: int) -> int:
    """Latent frames of ``frames`` pixel frames through a causal video VAE that compresses time
    by ``temporal_factor``: ``(frames - 1) / temporal_factor + 1``. Only ``k * factor + 1``
    frames map whole; others are refused."""
    if frames < 1 or (frames - 1) % temporal_factor:
        raise ConfigError(f"{frames} frames do not fit a causal video VAE that compresses time by "
                          f"{temporal_factor}: give {temporal_factor}k + 1 frames (e.g. "
                          f"{max(0, (frames - 1) // temporal_factor) * temporal_factor + 1} or "
                          f"{((frames - 1) // temporal_factor + 1) * temporal_factor + 1})")
    return (frames - 1) // temporal_factor + 1


@dataclass
class VideoParts:
    """The frozen parts of a Wan or CogVideoX model: the pipeline without its transformer."""

    kind: str  # "wan" | "cogvideox"
    pipeline: WanPipeline | CogVideoXPipeline

    @property
    def spec(self) -> VideoKind:
        return KINDS[self.kind]

    @property
    def vae(self) -> nn.Module:
        return self.pipeline.vae

    @property
    def scheduler(self):
        return self.pipeline.scheduler

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def temporal_factor(self) -> int:
        return self.pipeline.vae_scale_factor_temporal

    @property
    def spatial_factor(self) -> int:
        return self.pipeline.vae_scale_factor_spatial

    @property
    def latent_channels(self) -> int:
        cfg = self.vae.config
        return cfg.z_dim if self.kind == "wan" else cfg.latent_channels

    def frozen_modules(self) -> list[nn.Module]:
        return [self.pipeline.vae, self.pipeline.text_encoder]

    def with_transformer(self, transformer: nn.Module):
        """The full pipeline of these parts and ``transformer``, ready to sample."""
        components = {k: v for k, v in self.pipeline.components.items() if k not in ("transformer", "transformer_2")}
        return PIPELINES[self.kind](transformer=transformer, **components)


# -- tiny builders ------------------------------------------------------------------------

def tiny_wan(seed: int = 0) -> WanTransformer3DModel:
    """A tiny Wan 2.1-class DiT: 2 blocks of width 24 (2 heads of 12) over 1 x 2 x 2 patches of
    4 latent channels, cross-attending to the UMT5 width (32)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=TINY_LATENT_CHANNELS,
            out_channels=TINY_LATENT_CHANNELS, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def tiny_wan_parts(seed: int = 0) -> VideoParts:
    """The causal Wan VAE (x8 in space, x4 in time, per-channel latent mean and std), a UMT5
    encoder, its tokenizer and a flow-matching scheduler with Wan 2.1's 480p shift (3.0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(
            base_dim=8, z_dim=TINY_LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.05],
            latents_std=[1.5, 0.8, 1.2, 2.0])
        text_encoder = UMT5EncoderModel(_umt5_config())
    pipe = WanPipeline(tokenizer=tiny_t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=None)
    return VideoParts("wan", pipe)


def tiny_cogvideox(seed: int = 0, rotary: bool = True) -> CogVideoXTransformer3DModel:
    """A tiny CogVideoX-class expert transformer: 1 block of width 32 (2 heads of 16) over 2 x 2
    patches of 4 latent channels; ``rotary`` as CogVideoX-5B (3-D rotary positions), else
    CogVideoX-2B's learned sin-cos positions."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        side = TINY_SIZE // 8
        return CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=TINY_LATENT_CHANNELS,
            out_channels=TINY_LATENT_CHANNELS, time_embed_dim=8, text_embed_dim=32, num_layers=1,
            sample_width=side, sample_height=side, sample_frames=TINY_FRAMES, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=TINY_T5_TOKENS,
            use_rotary_positional_embeddings=rotary)


def tiny_cogvideox_parts(seed: int = 0, rotary: bool = True) -> VideoParts:
    """The causal CogVideoX VAE (4 down blocks: x8 in space, x4 in time), a T5 encoder, its
    tokenizer and CogVideoX-2B's scheduler (v-prediction, zero-terminal-SNR, SNR shift 3.0)."""
    del rotary  # a transformer option; accepted so one builder_args fits both
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
            latent_channels=TINY_LATENT_CHANNELS, layers_per_block=1, norm_num_groups=2,
            temporal_compression_ratio=4, sample_height=TINY_SIZE, sample_width=TINY_SIZE)
        text_encoder = T5EncoderModel(_t5_config())
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=True, steps_offset=0,
        rescale_betas_zero_snr=True, snr_shift_scale=3.0, timestep_spacing="trailing")
    pipe = CogVideoXPipeline(tokenizer=tiny_t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                             transformer=None, scheduler=scheduler)
    return VideoParts("cogvideox", pipe)


def _umt5_config() -> UMT5Config:
    base = _t5_config()
    return UMT5Config(vocab_size=base.vocab_size, d_model=base.d_model, d_kv=base.d_kv, d_ff=base.d_ff,
                      num_layers=base.num_layers, num_heads=base.num_heads,
                      relative_attention_num_buckets=base.relative_attention_num_buckets,
                      feed_forward_proj=base.feed_forward_proj, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)


BUILDERS = {"tiny_wan": tiny_wan, "tiny_cogvideox": tiny_cogvideox}


# -- real checkpoints ---------------------------------------------------------------------

def kind_of(path: str) -> str:
    """``wan`` or ``cogvideox``, from the folder's ``model_index.json``."""
    index = Path(path) / "model_index.json"
    name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    for kind, cls in PIPELINES.items():
        if name == cls.__name__:
            return kind
    raise ConfigError(f"{path}: model_index.json names {name or 'no pipeline'}; video_diffusion needs a local "
                      "WanPipeline or CogVideoXPipeline folder (saved with save_pretrained)")


def load_transformer(path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The transformer of a local Wan / CogVideoX folder (``path/transformer``)."""
    return TRANSFORMERS[kind_of(path)].from_pretrained(path, subfolder="transformer", torch_dtype=dtype)


def load_video_parts(path: str, dtype: torch.dtype = torch.float32) -> VideoParts:
    """Everything of a local Wan / CogVideoX folder but its transformer(s)."""
    kind = kind_of(path)
    extra = {"transformer_2": None} if kind == "wan" else {}
    pipe = PIPELINES[kind].from_pretrained(path, transformer=None, torch_dtype=dtype, **extra)
    return VideoParts(kind, pipe)
