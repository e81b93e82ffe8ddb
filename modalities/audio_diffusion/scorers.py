"""Audio reward scorers, registered in ``mmalign.registry.rewards``: ``clap``.

CLAP (Wu et al. 2023, arXiv:2211.06687) scores a clip for a caption by the cosine of its
audio and text embeddings, as Tango 2 ranks its candidates to build Audio-Alpaca
(Majumder et al. 2024, arXiv:2404.09956). Built from a local path only (no hub).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from mmalign.errors import ConfigError
from mmalign.registry import register_reward


@register_reward("clap")
class ClapScore:
    """``scale * cos(E_audio(x), E_text(c))`` with transformers' ``ClapModel`` and
    ``ClapProcessor`` from the local folder ``path``; or a given ``model`` / ``processor``
    (tests). Waves are mono ``[samples]`` (or ``[channels, samples]``, averaged) at ``rate``,
    resampled to the processor's rate."""

    def __init__(self, path: str | None = None, scale: float = 1.0, device: str = "cpu", model=None,
                 processor=None):
        from transformers import ClapModel, ClapProcessor

        if model is None:
            if not path or not Path(path).is_dir():
                raise ConfigError(f"reward 'clap' needs path: a local ClapModel folder (got {path!r}); nothing is "
                                  "downloaded")
            model, processor = ClapModel.from_pretrained(path), ClapProcessor.from_pretrained(path)
        self.model, self.processor = model.to(device).eval(), processor
        self.scale, self.device = scale, device

    @torch.no_grad()
    def score(self, waves: Sequence[Tensor], prompts: Sequence[str], rate: int) -> Tensor:
        if len(waves) != len(prompts):
            raise ValueError(f"score() needs one prompt per clip; got {len(waves)} clips, {len(prompts)} prompts")
        import torchaudio

        target = self.processor.feature_extractor.sampling_rate
        mono = [torchaudio.functional.resample(w.float().reshape(-1, w.shape[-1]).mean(0), rate, target).numpy()
                for w in waves]
        audio = self.processor.feature_extractor(mono, sampling_rate=target, return_tensors="pt")
        text = self.processor.tokenizer(list(prompts), padding=True, return_tensors="pt")
        a = _tensor(self.model.get_audio_features(**{k: v.to(self.device) for k, v in audio.items()}))
        t = _tensor(self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()}))
        return self.scale * torch.nn.functional.cosine_similarity(a, t, dim=-1).cpu()


def _tensor(out) -> Tensor:
    """transformers 5 returns an output object where 4 returned the projected tensor."""
    return out if isinstance(out, Tensor) else out.pooler_output
