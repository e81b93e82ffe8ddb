"""Audio reading, checking, conversion and writing, shared by every audio plugin.

Files are read with soundfile (``torchaudio.load`` needs torchcodec and FFmpeg, which do not
work here; ``datasets``' ``Audio`` feature decodes through torchcodec too, so tables are read
with ``Audio(decode=False)`` and a cell is a path, bytes, or a ``{"bytes", "path"}`` dict).
torchaudio resamples to the model's rate and computes mels (never an STFT of our own); stereo
becomes mono where the model takes mono. A clip that is silent, or too short, is refused with a
message naming file, row and field; clipping is reported (it cannot be undone); a clip shorter
than the training length but long enough is padded with silence and counted as repaired.
"""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

from mmalign.data.io import RowRef
from mmalign.modalities.media_cells import Source, media_source

#: peak below which a clip is silent (about -80 dBFS)
SILENT_PEAK = 1e-4
#: samples at or above this magnitude count as clipped; a clip with more than CLIPPED_SHARE of them is reported
CLIPPED_LEVEL, CLIPPED_SHARE = 0.999, 0.01


@dataclass(frozen=True)
class AudioCheck:
    """Bounds of a training clip: ``seconds`` taken from its start; shorter than
    ``min_seconds`` is refused, shorter than ``seconds`` padded with silence."""

    seconds: float
    min_seconds: float


def audio_source(value: Any, where: RowRef, field: str) -> Source:
    """An audio cell as a path (relative paths are read from the data file's folder) or bytes."""
    return media_source(value, where, field, "audio", "WAV, FLAC, OGG")


def read_audio(source: Source, where: RowRef, field: str) -> tuple[torch.Tensor, int]:
    """``(wave [channels, samples] float32 in [-1, 1], rate)`` decoded by soundfile."""
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32",
                             always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise where.error(field, f"the audio could not be decoded ({err})",
                          "Re-encode the clip as WAV or FLAC, or drop the row") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def to_model(wave: torch.Tensor, rate: int, model_rate: int, channels: int) -> torch.Tensor:
    """Resampled to ``model_rate`` (torchaudio) and to ``channels``: stereo to mono by the
    channels' mean, mono to stereo by copying."""
    if rate != model_rate:
        wave = torchaudio.functional.resample(wave, rate, model_rate)
    if wave.shape[0] != channels:
        wave = wave.mean(0, keepdim=True).expand(channels, -1).contiguous()
    return wave


def check_clip(wave: torch.Tensor, rate: int, check: AudioCheck, where: RowRef, field: str,
               counts: Counter) -> torch.Tensor:
    """The first ``check.seconds`` of ``wave``: silent or too short is refused; clipping is
    counted (``reported: clipped audio``); a short clip is padded (``repaired: audio padded``)."""
    seconds = wave.shape[-1] / rate
    if seconds < check.min_seconds:
        raise where.error(field, f"the clip lasts {seconds:.3f} s, shorter than the {check.min_seconds:g} s "
                          "required", "Drop the row, or lower model.options.min_seconds")
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak < SILENT_PEAK:
        raise where.error(field, f"the clip is silent (peak {peak:.1e})", "Drop the row: silence prefers nothing")
    if float((wave.abs() >= CLIPPED_LEVEL).float().mean()) > CLIPPED_SHARE:
        counts["reported: clipped audio"] += 1
    length = round(check.seconds * rate)
    if wave.shape[-1] < length:
        counts["repaired: audio padded"] += 1
        wave = torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))
    return wave[..., :length]


def model_wave(source: Source, model_rate: int, channels: int, check: AudioCheck, where: RowRef, field: str,
               counts: Counter | None = None) -> torch.Tensor:
    """A clip as the model takes it: ``[channels, seconds * model_rate]``."""
    wave, rate = read_audio(source, where, field)
    wave = to_model(wave, rate, model_rate, channels)
    return check_clip(wave, model_rate, check, where, field, counts if counts is not None else Counter())


def mel_transform(sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int, f_min: float,
                  f_max: float) -> torchaudio.transforms.MelSpectrogram:
    """The magnitude mel of AudioLDM / Tango (TacotronSTFT: Hann window, centred reflect-padded
    frames, Slaney mel scale and norm, power 1)."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, f_min=f_min, f_max=f_max,
        n_mels=n_mels, power=1.0, norm="slaney", mel_scale="slaney", center=True, pad_mode="reflect")


def log_mel(wave: torch.Tensor, mel: dict, frames: int | None = None) -> torch.Tensor:
    """``[..., samples]`` -> ``log(max(mel, 1e-5))`` ``[..., 1, frames, n_mels]`` (time x mel,
    AudioLDM's layout), cut or padded (with the log floor) to ``frames``."""
    spec = mel_transform(**mel).to(wave.dtype)(wave).clamp(min=1e-5).log().transpose(-1, -2)
    if frames is not None:
        spec = spec[..., :frames, :]
        if spec.shape[-2] < frames:
            pad = spec.new_full((*spec.shape[:-2], frames - spec.shape[-2], spec.shape[-1]), float(np.log(1e-5)))
            spec = torch.cat([spec, pad], dim=-2)
    return spec.unsqueeze(-3)


def write_wav(path: str | Path, wave: torch.Tensor, rate: int) -> str:
    """``wave`` ``[channels, samples]`` (or ``[samples]``) in [-1, 1] as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.detach().float().cpu().clamp(-1, 1)
    sf.write(str(path), (data if data.ndim == 1 else data.T).numpy(), rate, subtype="PCM_16")
    return str(path)
