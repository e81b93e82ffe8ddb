"""Per-row and per-token batch fields, by hand, and through the text plugin."""
from __future__ import annotations

import torch

from mmalign.modalities.tokens.fields import pair_fields, row_fields, sentence_token_mask


def test_row_fields_keep_what_every_row_has():
    records = [{"fields": {"margin": 2, "score": 0.5}}, {"fields": {"margin": 1.5}}]
    fields = row_fields(records)
    assert list(fields) == ["margin"] and fields["margin"].tolist() == [2.0, 1.5]
    assert row_fields([{"fields": {}}, {}]) == {}


def test_pair_fields_by_hand():
    """Row 0: chosen 5 6 7 / rejected 5 9 7 8 -> 6 and 9, 8 changed; row 1 identical. Units = 4.
    Row 0 has sentence labels: chosen tokens in sentence (0, 4) labelled 1 count, the rest not;
    the rejected side has no labels, so every rejected token counts."""
    encoded = [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 9, 7, 8],
                "chosen_offsets": [(0, 2), (2, 4), (4, 4)], "chosen_spans": [(0, 4, 1)]},
               {"chosen_ids": [1, 2], "rejected_ids": [1, 2]}]
    fields = pair_fields(encoded)
    assert fields["chosen_changed"].tolist() == [[False, True, False, False], [False] * 4]
    assert fields["rejected_changed"].tolist() == [[False, True, False, True], [False] * 4]
    assert fields["chosen_token_mask"].tolist() == [[True, True, False, False], [True, True, False, False]]
    assert fields["rejected_token_mask"].tolist() == [[True] * 4, [True, True, False, False]]


def test_eos_belongs_to_no_sentence():
    assert sentence_token_mask([(0, 3), (3, 3)], [(0, 3, 0)], keep_label=0) == [True, False]


def test_text_batches_carry_changed_tokens_and_row_fields():
    from mmalign.modalities.text import TextModality
    from mmalign.modality import ModelSpec

    modality = TextModality(chat_template=False, max_length=32)
    modality.load_policy(ModelSpec(builder="tiny_llama"))
    batch = modality.collate([{"sample_id": "a", "prompt": "Q", "chosen": "cat", "rejected": "car",
                               "fields": {"margin": 1.0}}])
    assert batch.fields["chosen_changed"].tolist() == [[False, False, True, False]]  # c a t </s>
    assert torch.equal(batch.fields["margin"], torch.tensor([1.0]))
