"""Tiny SD3 / FLUX builders and the loader of real rectified-flow checkpoints.

The tiny builders return the very classes the real models use (``SD3Transformer2DModel``,
``FluxTransformer2DModel``, a 16-channel ``AutoencoderKL`` without quant convs,
``CLIPTextModelWithProjection`` / ``CLIPTextModel``, ``T5EncoderModel``,
``FlowMatchEulerDiscreteScheduler``) at a size that runs forward and backward on a CPU in
milliseconds. Weights are random and fixed by ``seed``; the tokenizers are built in memory
(no hub).

The frozen parts are kept as the diffusers pipeline itself with no transformer
(:class:`FlowParts`): its ``encode_prompt`` is then the exact text conditioning the pipeline
samples with, and the trained transformer joins the same components to sample.

``tiny_sd3`` / ``tiny_flux`` build the trainable transformer; ``tiny_sd3_parts`` /
``tiny_flux_parts`` the frozen parts that go with it (called with the same arguments).
``load_transformer`` / ``load_flow_parts`` read a local diffusers folder of
``StableDiffusion3Pipeline`` or ``FluxPipeline``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel,
                       SD3Transformer2DModel, StableDiffusion3Pipeline)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import (CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel,
                          T5TokenizerFast)

from mmalign.errors import ConfigError
from mmalign.models.diffusion import _text_config, tiny_clip_tokenizer

#: 32 px RGB -> 16 x 16 x 16 latents (the tiny VAE halves once)
TINY_RESOLUTION = 32
TINY_T5_TOKENS = 16
PIPELINES = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}
TRANSFORMERS = {"sd3": SD3Transformer2DModel, "flux": FluxTransformer2DModel}
#: the VAEs' latent normalisation (vae/config.json of SD3 medium and FLUX.1)
VAE_FACTORS = {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159)}


@dataclass
class FlowParts:
    """The frozen parts of an SD3 or FLUX model: the pipeline without its transformer."""

    kind: str  # "sd3" | "flux"
    pipeline: StableDiffusion3Pipeline | FluxPipeline

    @property
    def vae(self) -> AutoencoderKL:
        return self.pipeline.vae

    @property
    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return self.pipeline.scheduler

    def frozen_modules(self) -> list[nn.Module]:
        names = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(self.pipeline, n, None) for n in names) if m is not None]

    def with_transformer(self, transformer: nn.Module):
        """The full pipeline of these parts and ``transformer``, ready to sample."""
        components = {k: v for k, v in self.pipeline.components.items() if k != "transformer"}
        return PIPELINES[self.kind](transformer=transformer, **components)


# -- tiny builders ------------------------------------------------------------------------

def tiny_sd3(seed: int = 0) -> SD3Transformer2DModel:
    """A tiny SD3-class MMDiT: 2 joint blocks of width 32 over 2 x 2 patches of 16 channels;
    the context is the T5 width (32), the pooled projection both CLIP projections (16 + 16)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SD3Transformer2DModel(
            sample_size=TINY_RESOLUTION // 2, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
            attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
            pooled_projection_dim=32, pos_embed_max_size=16)


def tiny_sd3_parts(seed: int = 0) -> FlowParts:
    """VAE, CLIP-L, CLIP-G and T5 encoders, their tokenizers and SD3's scheduler (shift 3.0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = _vae("sd3")
        clip_l = CLIPTextModelWithProjection(_text_config(hidden=16, projection_dim=16))
        clip_g = CLIPTextModelWithProjection(_text_config(hidden=16, projection_dim=16))
        t5 = T5EncoderModel(_t5_config())
    pipe = StableDiffusion3Pipeline(
        transformer=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip_l, tokenizer=tiny_clip_tokenizer(), text_encoder_2=clip_g,
        tokenizer_2=tiny_clip_tokenizer(), text_encoder_3=t5, tokenizer_3=tiny_t5_tokenizer())
    return FlowParts("sd3", pipe)


def tiny_flux(seed: int = 0, guidance_embeds: bool = False) -> FluxTransformer2DModel:
    """A tiny FLUX-class transformer: one double and one single block of width 32 over packed
    2 x 2 patches of 16 channels (64 inputs); ``guidance_embeds`` as FLUX.1-dev (distilled
    guidance) rather than FLUX.1-schnell."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
            guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6))


def tiny_flux_parts(seed: int = 0, guidance_embeds: bool = False) -> FlowParts:
    """VAE, CLIP and T5 encoders, their tokenizers and FLUX's resolution-dependent scheduler."""
    del guidance_embeds  # a transformer option; accepted so one builder_args fits both
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = _vae("flux")
        clip = CLIPTextModel(_text_config(hidden=16))
        t5 = T5EncoderModel(_t5_config())
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tiny_clip_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=tiny_t5_tokenizer(), transformer=None)
    return FlowParts("flux", pipe)


def _vae(kind: str) -> AutoencoderKL:
    scaling, shift = VAE_FACTORS[kind]
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=TINY_RESOLUTION, scaling_factor=scaling,
        shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False)


def _t5_config() -> T5Config:
    return T5Config(vocab_size=len(tiny_t5_tokenizer()), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0,
                    eos_token_id=1, decoder_start_token_id=0)


def tiny_t5_tokenizer() -> T5TokenizerFast:
    """A T5 (Unigram, SentencePiece-style) tokenizer whose pieces are single characters.

    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 as in T5, then the word-start mark and printable ASCII;
    every sequence ends with ``</s>``, as T5's post-processor writes it.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -1.0) for c in range(33, 127)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=TINY_T5_TOKENS)


# -- real checkpoints ---------------------------------------------------------------------

def kind_of(path: str) -> str:
    """``sd3`` or ``flux``, from the folder's ``model_index.json``."""
    index = Path(path) / "model_index.json"
    name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    for kind, cls in PIPELINES.items():
        if name.startswith(cls.__name__.replace("Pipeline", "")):
            return kind
    raise ConfigError(f"{path}: model_index.json names {name or 'no pipeline'}; image_flow needs a local "
                      "StableDiffusion3Pipeline or FluxPipeline folder (saved with save_pretrained)")


def load_transformer(path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The transformer of a local SD3 / FLUX folder (``path/transformer``)."""
    return TRANSFORMERS[kind_of(path)].from_pretrained(path, subfolder="transformer", torch_dtype=dtype)


def load_flow_parts(path: str, vae_path: str | None = None, dtype: torch.dtype = torch.float32) -> FlowParts:
    """Everything of a local SD3 / FLUX folder but its transformer; ``vae_path`` replaces the VAE."""
    kind = kind_of(path)
    extra = {}
    if vae_path:
        sub = "vae" if (Path(vae_path) / "vae").is_dir() else None
        extra["vae"] = AutoencoderKL.from_pretrained(vae_path, subfolder=sub, torch_dtype=dtype)
    pipe = PIPELINES[kind].from_pretrained(path, transformer=None, torch_dtype=dtype, **extra)
    return FlowParts(kind, pipe)
