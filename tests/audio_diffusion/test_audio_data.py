"""Schemas and the ranked-pair builder."""
from __future__ import annotations

import json

import pytest

from mmalign.modalities.audio_diffusion.example import tone
from mmalign.modalities.audio_diffusion.options import parse_options
from mmalign.modalities.audio_diffusion.pairs import ranked_pairs
from mmalign.modalities.audio_diffusion.records import load_records
from mmalign.modalities.audio_io import write_wav


def test_best_vs_worst_and_rank_gap_weights():
    assert ranked_pairs([0.2, 0.9, 0.5]) == [(1, 0, 1.0)]
    pairs = ranked_pairs([0.2, 0.9, 0.5], "all")
    assert sorted(pairs) == [(1, 0, 1.0), (1, 2, 0.5), (2, 0, 0.5)]
    assert ranked_pairs([0.3, 0.3]) == []


def test_audio_alpaca_pairs_load(pairs_file):
    records = load_records(pairs_file, "audio_pairs", parse_options({"seconds": 1.0}))
    assert len(records) == 4 and records[0]["audio_fields"] == ["chosen_audio", "rejected_audio"]
    assert records[0]["fields"]["rank_weight"] == 1.0 and records[0]["digests"][0] != records[0]["digests"][1]


def test_ranked_rows_become_weighted_pairs(tmp_path):
    for k in range(3):
        write_wav(tmp_path / f"c{k}.wav", tone(200 + 300 * k), 8000)
    (tmp_path / "r.jsonl").write_text(json.dumps({"prompt": "a tone", "audios": ["c0.wav", "c1.wav", "c2.wav"],
                                                  "scores": [0.1, 0.8, 0.4]}) + "\n")
    opts = parse_options({"seconds": 1.0, "pairing": "all"})
    records = load_records(str(tmp_path / "r.jsonl"), "audio_ranked", opts)
    got = {(r["audio_fields"][0], r["audio_fields"][1]): r["fields"]["rank_weight"] for r in records}
    assert got == {("audios[1]", "audios[0]"): 1.0, ("audios[1]", "audios[2]"): 0.5, ("audios[2]", "audios[0]"): 0.5}
    assert len({r["sample_id"] for r in records}) == 3
    best = load_records(str(tmp_path / "r.jsonl"), "audio_ranked", parse_options({"seconds": 1.0}))
    assert [r["audio_fields"] for r in best] == [["audios[1]", "audios[0]"]]


def test_ranked_row_with_wrong_scores_is_refused(tmp_path):
    write_wav(tmp_path / "c.wav", tone(300), 8000)
    (tmp_path / "r.jsonl").write_text(json.dumps({"prompt": "x", "audios": ["c.wav", "c.wav"], "scores": [1]}) + "\n")
    from mmalign.errors import DataError
    with pytest.raises(DataError, match="one finite number per clip"):
        load_records(str(tmp_path / "r.jsonl"), "audio_ranked", parse_options({"seconds": 1.0}))
