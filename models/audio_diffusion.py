"""Tiny text-to-audio diffusion builders, and the loaders of real checkpoints, for two forms.

* ``ace_step``: ACE-Step (Gong et al. 2025, arXiv:2506.00045; diffusers' ACE-Step 1.5 port):
  ``AceStepTransformer1DModel`` trained by flow matching on the latents ``[T, C]`` of a
  waveform VAE (``AutoencoderOobleck``, stereo), conditioned through an
  ``AceStepConditionEncoder`` on a Qwen3 text encoder's caption states, the lyrics' token
  embeddings and a timbre reference; frozen parts kept as ``AceStepPipeline`` without its
  transformer.
* ``tango``: Tango 2's form (Majumder et al. 2024, arXiv:2404.09956, on Tango / AudioLDM,
  arXiv:2301.12503): a ``UNet2DConditionModel`` cross-attending FLAN-T5 states, over the latents
  of AudioLDM's mel VAE (``AutoencoderKL`` with one input channel, mel ``[1, T, n_mels]``), a
  DDPM schedule, and the HiFi-GAN vocoder (``SpeechT5HifiGan``) used only to sample.

The tiny builders return the real classes at a size that runs on a CPU in milliseconds;
weights are random and fixed by ``seed``; tokenizers are built in memory (no hub).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (AceStepPipeline, AceStepTransformer1DModel, AutoencoderKL, AutoencoderOobleck, DDPMScheduler,
                       FlowMatchEulerDiscreteScheduler, UNet2DConditionModel)
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
from torch import nn
from transformers import AutoTokenizer, Qwen3Config, Qwen3Model, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5EncoderModel

from mmalign.errors import ConfigError
from mmalign.models.flow import _t5_config, tiny_t5_tokenizer

#: tiny ACE-Step: 8 kHz stereo, a VAE hop of 256 samples (31.25 latents / s) of 8 channels
TINY_ACE_RATE, TINY_ACE_HOP, TINY_ACE_CHANNELS = 8000, (4, 8, 8), 8
#: tiny Tango: 8 kHz mono, mel of 16 bands every 64 samples; the VAE halves once
TINY_TANGO_RATE = 8000
TINY_MEL = {"sample_rate": 8000, "n_fft": 256, "win_length": 256, "hop_length": 64, "n_mels": 16,
            "f_min": 0.0, "f_max": 4000.0}
#: AudioLDM / Tango 16 kHz mel (TacotronSTFT settings of their configs)
TANGO_MEL = {"sample_rate": 16000, "n_fft": 1024, "win_length": 1024, "hop_length": 160, "n_mels": 64,
             "f_min": 0.0, "f_max": 8000.0}
PIPELINES = {"ace_step": AceStepPipeline}


@dataclass
class AudioParts:
    """The frozen parts of an audio model: for ``ace_step`` the pipeline without its
    transformer; for ``tango`` the components (``vae``, ``text_encoder``, ``tokenizer``,
    ``scheduler``, ``vocoder``) and the mel settings."""

    kind: str  # "ace_step" | "tango"
    components: dict[str, Any]
    pipeline: AceStepPipeline | None = None
    mel: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str):
        comps = self.__dict__.get("components", {})
        if name in comps:
            return comps[name]
        raise AttributeError(name)

    @property
    def sample_rate(self) -> int:
        return int(self.vae.config.sampling_rate) if self.kind == "ace_step" else int(self.mel["sample_rate"])

    @property
    def channels(self) -> int:
        return int(self.vae.config.audio_channels) if self.kind == "ace_step" else 1

    def frozen_modules(self) -> list[nn.Module]:
        names = ("vae", "text_encoder", "condition_encoder") if self.kind == "ace_step" else ("vae", "text_encoder")
        return [self.components[n] for n in names if self.components.get(n) is not None]

    def sampling_modules(self) -> list[nn.Module]:
        return self.frozen_modules() + ([self.vocoder] if self.kind == "tango" else [])

    def with_transformer(self, transformer: nn.Module) -> AceStepPipeline:
        """ACE-Step's full pipeline of these parts and ``transformer``, ready to sample."""
        comps = {k: v for k, v in self.pipeline.components.items() if k != "transformer"}
        return AceStepPipeline(transformer=transformer, **comps)


# -- ACE-Step ------------------------------------------------------------------------------

def tiny_ace_step(seed: int = 0) -> AceStepTransformer1DModel:
    """Two DiT blocks of width 32 (one sliding-window, one full) over patches of 2 latent
    frames; input = context (8 source-latent + 8 mask channels) + 8 noisy channels."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AceStepTransformer1DModel(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, in_channels=3 * TINY_ACE_CHANNELS, audio_acoustic_hidden_dim=TINY_ACE_CHANNELS, patch_size=2,
            sliding_window=8, encoder_hidden_size=32)


def tiny_ace_step_parts(seed: int = 0) -> AudioParts:
    """Oobleck VAE (8 kHz stereo), a one-layer Qwen3 text encoder on a character tokenizer,
    the condition encoder (lyric and timbre encoders) and the pipeline's scheduler."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderOobleck(encoder_hidden_size=2 * TINY_ACE_CHANNELS, downsampling_ratios=list(TINY_ACE_HOP),
                                 channel_multiples=[1, 2, 2], decoder_channels=8,
                                 decoder_input_channels=TINY_ACE_CHANNELS, audio_channels=2,
                                 sampling_rate=TINY_ACE_RATE)
        tokenizer = tiny_t5_tokenizer()
        text = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                      max_position_embeddings=4096, pad_token_id=0))
        cond = AceStepConditionEncoder(hidden_size=32, intermediate_size=64, text_hidden_dim=16,
                                       timbre_hidden_dim=TINY_ACE_CHANNELS, num_lyric_encoder_hidden_layers=1,
                                       num_timbre_encoder_hidden_layers=1, num_attention_heads=4,
                                       num_key_value_heads=2, head_dim=8, sliding_window=8)
        cond.silence_latent.normal_(0, 0.1)  # the converter writes encoded silence here
    pipe = AceStepPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, transformer=None, condition_encoder=cond,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))
    return AudioParts("ace_step", dict(pipe.components), pipeline=pipe)


# -- Tango 2's form ------------------------------------------------------------------------

def tiny_tango(seed: int = 0) -> UNet2DConditionModel:
    """A two-level UNet over 8-channel latents, cross-attending 32-wide T5 states."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=16, in_channels=8, out_channels=8, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=8)


def tiny_tango_parts(seed: int = 0) -> AudioParts:
    """The mel VAE (1 input channel, 8 latent channels, x2), a tiny T5 encoder, SD 2.1's
    v-prediction DDPM schedule (the one Tango trains with) and a HiFi-GAN at 8 kHz / hop 64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(8, 16),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8, sample_size=32, scaling_factor=0.9227)
        text = T5EncoderModel(_t5_config())
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=TINY_MEL["n_mels"], sampling_rate=TINY_TANGO_RATE, upsample_initial_channel=16,
            upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]], normalize_before=False))
    return AudioParts("tango", {"vae": vae, "text_encoder": text, "tokenizer": tiny_t5_tokenizer(),
                                "scheduler": tango_scheduler(), "vocoder": vocoder}, mel=dict(TINY_MEL))


def tango_scheduler() -> DDPMScheduler:
    """SD 2.1's scheduler config (``scaled_linear`` 0.00085 to 0.012, v-prediction), which
    Tango's training script loads as its noise scheduler."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="v_prediction", clip_sample=False)


# -- real checkpoints ----------------------------------------------------------------------

def kind_of(path: str) -> str:
    """``ace_step`` for a saved ``AceStepPipeline`` folder, ``tango`` for a folder with
    ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (and ``vocoder/``)."""
    index = Path(path) / "model_index.json"
    name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    if name == "AceStepPipeline":
        return "ace_step"
    if (Path(path) / "unet").is_dir() and (Path(path) / "vae").is_dir():
        return "tango"
    raise ConfigError(f"{path}: neither a saved AceStepPipeline (model_index.json names {name or 'nothing'}) nor a "
                      "Tango-form folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/, vocoder/)")


def load_denoiser(path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The trainable network of a local folder: ``transformer/`` (ACE-Step) or ``unet/`` (Tango)."""
    if kind_of(path) == "ace_step":
        return AceStepTransformer1DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype)
    return UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)


def load_audio_parts(path: str, dtype: torch.dtype = torch.float32, mel: dict | None = None) -> AudioParts:
    """Everything of a local folder but its denoiser; ``mel``: the Tango form's mel settings
    (AudioLDM's 16 kHz, 64 bands, hop 160 when not given)."""
    if kind_of(path) == "ace_step":
        pipe = AceStepPipeline.from_pretrained(path, transformer=None, torch_dtype=dtype)
        return AudioParts("ace_step", dict(pipe.components), pipeline=pipe)
    comps = {"vae": AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype),
             "text_encoder": T5EncoderModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype),
             "tokenizer": AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
             "scheduler": DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
             "vocoder": SpeechT5HifiGan.from_pretrained(path, subfolder="vocoder", torch_dtype=dtype)
             if (Path(path) / "vocoder").is_dir() else None}
    return AudioParts("tango", comps, mel=dict(mel or TANGO_MEL))
