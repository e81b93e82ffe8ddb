"""mDPO's conditional term on sounds: the chosen answer under the row's ``rejected_audio``
(ms-swift's ``rejected_audios``), or under its own sound with half its spans silenced or its
spans reordered; the term equals a plain forward on that sound. And ms-swift / LLaMA-Factory
rows with ``audios`` load."""
from __future__ import annotations

import json

import pytest
import torch

from mmalign.modalities.vision_language.clip_perturb import corrupt_sound, mask_spans
from mmalign.modalities.vision_language.media import open_media
from mmalign.objectives.conditional import CORRUPTED

from tests.audio_language.sound_rows import tiny_modality, write_audio_rows, write_sounds

NEEDS = frozenset({"token_logps", f"terms:{CORRUPTED}"})


def _scores(modality, policy, records, needs=NEEDS, seed=0):
    batch = modality.collate(records)
    with torch.no_grad():
        return modality.surrogate(policy, batch, modality.draw(batch, seed), needs), batch


def test_mask_spans_by_hand():
    # 8 samples in 4 spans of 2: [1 2 | 3 4 | 5 6 | 7 8]. torch.randperm(4) from seed 0 is
    # [0, 1, 3, 2]; half of the spans (2) are silenced: the first two drawn, spans 0 and 1
    assert torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist() == [0, 1, 3, 2]
    out = mask_spans(torch.arange(1.0, 9.0), torch.Generator().manual_seed(0), 0.5, 4)
    assert out.tolist() == [0, 0, 0, 0, 5, 6, 7, 8]


@pytest.mark.parametrize("kind", ["mask", "shuffle"])
def test_corrupted_sound_term_is_the_chosen_answer_under_that_sound(kind, tmp_path):
    modality, policy = tiny_modality(audio_corruption=kind)
    records = modality.load_records(write_audio_rows(tmp_path), "audio_qa")
    out, batch = _scores(modality, policy, records)
    seeds = modality.draw(batch, 0)["corruption_seed"]
    swapped = []
    for record, seed in zip(records, seeds):
        wave = open_media(record, modality.sampling).audios[0]
        corrupted = corrupt_sound(wave, kind, torch.Generator().manual_seed(seed))
        assert corrupted.shape == wave.shape and not torch.equal(corrupted, wave)
        swapped.append({**record, "audios": [corrupted]})
    direct, _ = _scores(modality, policy, swapped, frozenset({"token_logps"}))
    torch.testing.assert_close(out.terms[CORRUPTED], direct.chosen, atol=1e-5, rtol=0)


def test_swift_rows_with_a_rejected_sound(tmp_path):
    sounds = write_sounds(tmp_path, 2)
    row = {"messages": [{"role": "user", "content": "<audio>What do you hear?"},
                        {"role": "assistant", "content": "a dog is barking"}],
           "rejected_response": "a bell rings", "audios": [sounds[0]], "rejected_audios": [sounds[1]]}
    (tmp_path / "swift.jsonl").write_text(json.dumps(row) + "\n")
    modality, policy = tiny_modality()
    record = modality.load_records(str(tmp_path / "swift.jsonl"), "swift")[0]
    assert record["audios"] == [sounds[0]] and record["rejected_audio"] == sounds[1]
    out, _ = _scores(modality, policy, [record])
    # the rejected sound (0.5 s) is padded with silence to the row's (1 s), so it becomes as many tokens
    own, other = (open_media({**record, "audios": [s]}, modality.sampling).audios[0] for s in sounds)
    padded = torch.nn.functional.pad(other, (0, own.shape[0] - other.shape[0]))
    direct, _ = _scores(modality, policy, [{**record, "audios": [padded]}], frozenset({"token_logps"}))
    torch.testing.assert_close(out.terms[CORRUPTED], direct.chosen, atol=1e-5, rtol=0)
