"""Audio I/O: bad clips refused or repaired with their message, conversion, and the mel."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from mmalign.data.io import RowRef
from mmalign.errors import DataError

from mmalign.modalities import audio_io
from mmalign.modalities.audio_diffusion.example import tone
from mmalign.models.audio_diffusion import TINY_MEL, TANGO_MEL

CHECK = audio_io.AudioCheck(seconds=1.0, min_seconds=0.5)


def _where(tmp_path) -> RowRef:
    return RowRef(str(tmp_path / "pairs.jsonl"), 2)


def _check(wave, tmp_path, counts=None):
    return audio_io.check_clip(wave, 8000, CHECK, _where(tmp_path), "chosen_audio", counts if counts is not None else Counter())


def test_silent_clip_is_refused_naming_row_and_field(tmp_path):
    with pytest.raises(DataError, match=r"silent") as err:
        _check(torch.zeros(1, 8000), tmp_path)
    assert "chosen_audio" in str(err.value) and "2" in str(err.value)


def test_too_short_clip_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"lasts 0.250 s, shorter than the 0.5 s"):
        _check(tone(440, seconds=0.25), tmp_path)


def test_short_clip_is_padded_and_counted(tmp_path):
    counts = Counter()
    out = _check(tone(440, seconds=0.75), tmp_path, counts)
    assert out.shape == (1, 8000) and counts["repaired: audio padded"] == 1
    assert float(out[:, 6000:].abs().max()) == 0.0


def test_clipped_clip_is_reported_and_kept(tmp_path):
    counts = Counter()
    out = _check((tone(440, amp=3.0)).clamp(-1, 1), tmp_path, counts)
    assert counts["reported: clipped audio"] == 1 and out.shape == (1, 8000)


def test_missing_and_undecodable_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        audio_io.audio_source("nope.wav", _where(tmp_path), "chosen_audio")
    with pytest.raises(DataError, match="could not be decoded"):
        audio_io.read_audio(b"not audio at all", _where(tmp_path), "chosen_audio")


def test_stereo_becomes_mono_and_rate_is_converted(tmp_path):
    stereo = torch.cat([tone(440, rate=16000), tone(440, rate=16000) * 0.5])
    path = audio_io.write_wav(tmp_path / "s.wav", stereo, 16000)
    wave, rate = audio_io.read_audio(path, _where(tmp_path), "a")
    assert wave.shape == (2, 16000) and rate == 16000
    mono = audio_io.to_model(wave, rate, 8000, 1)
    assert mono.shape == (1, 8000)
    ref = audio_io.to_model(wave.mean(0, keepdim=True), rate, 8000, 1)
    torch.testing.assert_close(mono, ref, atol=1e-6, rtol=0)


def test_datasets_audio_cell_undecoded_is_read(tmp_path):
    """``Audio(decode=False)`` gives ``{"bytes", "path"}``: the bytes are decoded by soundfile."""
    path = audio_io.write_wav(tmp_path / "a.wav", tone(440), 8000)
    cell = {"bytes": open(path, "rb").read(), "path": "a.wav"}
    source = audio_io.audio_source(cell, _where(tmp_path), "chosen")
    wave, rate = audio_io.read_audio(source, _where(tmp_path), "chosen")
    assert rate == 8000 and wave.shape == (1, 8000) and float(wave.abs().max()) > 0.4


@pytest.mark.parametrize("mel", [TINY_MEL, TANGO_MEL], ids=["tiny", "tango16k"])
def test_torchaudio_mel_equals_the_reference_feature_extraction(mel):
    """torchaudio's mel equals transformers' numpy STFT + Slaney mel filter bank (the
    TacotronSTFT settings of AudioLDM / Tango: Hann, centred reflect frames, magnitude,
    log clamped at 1e-5) on the same clip."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    gen = torch.Generator().manual_seed(0)
    wave = (tone(330, seconds=0.5, rate=mel["sample_rate"]) + 0.05 * torch.randn(1, mel["sample_rate"] // 2,
                                                                                   generator=gen)).double()
    ours = audio_io.log_mel(wave[0], mel)[0]  # [frames, n_mels]
    filters = mel_filter_bank(num_frequency_bins=mel["n_fft"] // 2 + 1, num_mel_filters=mel["n_mels"],
                              min_frequency=mel["f_min"], max_frequency=mel["f_max"], sampling_rate=mel["sample_rate"],
                              norm="slaney", mel_scale="slaney")
    ref = spectrogram(wave[0].numpy(), window_function(mel["win_length"], "hann"), frame_length=mel["win_length"],
                      hop_length=mel["hop_length"], fft_length=mel["n_fft"], power=1.0, center=True,
                      pad_mode="reflect", mel_filters=filters, mel_floor=1e-5, log_mel=None)
    ref = np.log(np.maximum(ref, 1e-5)).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)  # torchaudio builds its filters in float32


def test_wav_round_trip(tmp_path):
    wave = tone(440)
    path = audio_io.write_wav(tmp_path / "x.wav", wave, 8000)
    back, rate = audio_io.read_audio(path, _where(tmp_path), "x")
    assert rate == 8000 and torch.allclose(back, wave, atol=1 / 32767 + 1e-6)
