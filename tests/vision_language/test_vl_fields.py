"""What the token-level objectives read: changed-token fields (RLHF-V), sentence masks
(Mask-DPO), the corrupted / retrieved image terms (mDPO, Re-Align) and refused needs."""
from __future__ import annotations

import re

import pytest
import torch
from torch.testing import assert_close

from mmalign.errors import ConfigError
from mmalign.modalities.tokens.fields import changed_tokens
from mmalign.modality import check_needs
from mmalign.objectives.conditional import CORRUPTED, RETRIEVED


def test_changed_tokens_by_hand():
    """chosen 5 6 7 8 3 / rejected 5 9 7 8 8 3: the longest common block is 7 8, then 5 on
    its left and 3 on its right; what is left (6 / 9 and the second 8) changed."""
    chosen_changed, rejected_changed = changed_tokens([5, 6, 7, 8, 3], [5, 9, 7, 8, 8, 3])
    assert chosen_changed == [False, True, False, False, False]
    assert rejected_changed == [False, True, False, False, True, False]


def test_changed_fields_in_the_batch(pair_records):
    modality, _, records = pair_records
    batch = modality.collate(records[:1])  # "a dog on the grass ." vs "a cat on the grass next to a red car ."
    tokens = modality.processor.tokenizer
    assert tokens.convert_ids_to_tokens(records[0]["chosen_ids"])[:2] == ["a", "dog"]
    units = max(len(records[0]["chosen_ids"]), len(records[0]["rejected_ids"]))
    assert batch.fields["chosen_changed"].shape == (1, units)
    # only "dog" differs on the chosen side; "cat" and "next to a red car" on the rejected one
    assert batch.fields["chosen_changed"][0].nonzero().flatten().tolist() == [1]
    assert batch.fields["rejected_changed"][0].nonzero().flatten().tolist() == [1, 5, 6, 7, 8, 9]


def test_sentence_labels_become_token_masks(modality_with_policy, write_rows):
    """Chosen "a dog sits . | it has a hat ." labels 1, 0 -> its first four tokens count;
    rejected "a cat sits . | it is red ." labels 0, 1 -> its first four tokens count. EOS never."""
    modality, _ = modality_with_policy()
    row = {"image": "img0.png", "question": "What is here?",
           "chosen_sentences": [{"text": "A dog sits.", "label": 1}, {"text": "It has a hat.", "label": 0}],
           "rejected_sentences": [{"text": "A cat sits.", "label": 0}, {"text": "It is red.", "label": 1}]}
    record = modality.load_records(write_rows("s.jsonl", [row]), "rlaif_v")[0]
    assert record["chosen"] == "A dog sits. It has a hat."
    fields = modality.collate([record]).fields
    assert fields["chosen_token_mask"][0].tolist() == [True] * 4 + [False] * 6
    assert fields["rejected_token_mask"][0].tolist() == [True] * 4 + [False] * 5 + [False]


def test_draw_depends_on_row_and_epoch_not_on_batch_order(pair_records):
    modality, _, records = pair_records
    batch = modality.collate(records)
    flipped = modality.collate(records[::-1])
    seeds = modality.draw(batch, 7)["corruption_seed"]
    assert modality.draw(flipped, 7)["corruption_seed"] == seeds[::-1]
    batch.epoch = 1
    assert modality.draw(batch, 7)["corruption_seed"] != seeds


def test_corrupted_image_term(pair_records):
    modality, policy, records = pair_records
    batch = modality.collate(records)
    needs = frozenset({"terms:chosen|condition=corrupted"})
    with torch.no_grad():
        first = modality.surrogate(policy, batch, modality.draw(batch, 0), needs)
        again = modality.surrogate(policy, batch, modality.draw(batch, 0), needs)
        other = modality.surrogate(policy, batch, modality.draw(batch, 1), needs)
    term = first.terms["chosen|condition=corrupted"]
    assert term.shape == (3,)
    assert_close(again.terms["chosen|condition=corrupted"], term, atol=0, rtol=0)  # same draw, same image
    assert not torch.allclose(term, first.chosen)  # the corrupted image changes the likelihood
    assert not torch.allclose(other.terms["chosen|condition=corrupted"], term)  # another draw, another crop


@pytest.mark.parametrize("column, term", [("rejected_image", "chosen|condition=corrupted"),
                                          ("retrieved_image", "chosen|condition=retrieved")])
def test_given_image_terms_score_the_chosen_answer_with_that_image(modality_with_policy, write_rows,
                                                                   rlaif_rows, column, term):
    modality, policy = modality_with_policy()
    row = {**rlaif_rows[0], column: "img3.png"}
    record = modality.load_records(write_rows("x.jsonl", [row]), "rlaif_v")[0]
    swapped = modality.load_records(write_rows("y.jsonl", [{**rlaif_rows[0], "image": "img3.png"}]), "rlaif_v")[0]
    with torch.no_grad():
        batch = modality.collate([record])
        out = modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset({f"terms:{term}"}))
        batch = modality.collate([swapped])
        expected = modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset()).chosen
    assert_close(out.terms[term], expected, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("need", ["terms:chosen|text=shuffled", "terms:rejected|condition=corrupted"])
def test_unknown_needs_are_refused_by_the_core(pair_records, need):
    modality, _, _ = pair_records
    with pytest.raises(ConfigError, match=f"modality 'vision_language' cannot provide {re.escape(need)}"):
        check_needs(modality, frozenset({need}), "vision_language")
    check_needs(modality, frozenset({f"terms:{CORRUPTED}", f"terms:{RETRIEVED}", "fields:chosen_token_mask"}),
                "vision_language")


def test_draws_change_between_epochs_only_for_the_corrupted_term(pair_records):
    modality, _, _ = pair_records
    assert modality.draws_per_epoch(frozenset({f"terms:{CORRUPTED}", "token_logps"}))
    assert not modality.draws_per_epoch(frozenset({f"terms:{RETRIEVED}", "token_logps", "hidden"}))
