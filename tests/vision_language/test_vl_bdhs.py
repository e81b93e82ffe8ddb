"""BDHS: the word-count cosine by hand, image-token masking in embedding space, and the
reference-guided, similarity-filtered pairs."""
from __future__ import annotations

import math

import pytest
import torch
from vl_helpers import QUESTION, tiny_modality, write_rows

from mmalign.errors import ConfigError
from mmalign.modalities.vision_language.augment import bdhs
from mmalign.modalities.vision_language.augment.bdhs import masked_embeddings, sentences, word_cosine
from mmalign.modalities.vision_language.augment.common import open_images, prompt_inputs
from mmalign.modalities.vision_language.vision import embed

CHOSEN = "the image is red . there is a dog on the grass . a man is sitting ."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    modality, policy = tiny_modality()
    rows = [{"image": f"{colour}.png", "question": QUESTION, "chosen": CHOSEN, "rejected": "a cat ."}
            for colour in ("red", "blue", "green", "yellow")]
    records = modality.load_records(write_rows(tmp_path_factory.mktemp("bdhs"), "rows.jsonl", rows), "rlaif_v")
    return modality, policy, records


def test_word_cosine_by_hand():
    # counts {a:1, red:1, dog:1} . {a:1, blue:1, dog:1} = 2; norms sqrt(3) * sqrt(3): 2 / 3
    assert word_cosine("A red dog.", "a blue dog") == pytest.approx(2 / 3, abs=1e-12)
    # {dog:2} . {dog:1, cat:1} = 2; norms 2 * sqrt(2)
    assert word_cosine("dog dog", "dog cat") == pytest.approx(2 / (2 * math.sqrt(2)), abs=1e-12)
    assert word_cosine("", "dog") == 0.0 and word_cosine("Dog .", "dog") == pytest.approx(1.0, abs=1e-12)


def test_sentences():
    assert sentences(CHOSEN) == ["the image is red .", "there is a dog on the grass .", "a man is sitting ."]
    assert sentences("no mark at the end") == ["no mark at the end"]


def test_masking_zeroes_a_fraction_of_image_slots(setup):
    """Half of the 16 image slots are zero, everything else is the ordinary embedding; with
    every slot masked, two different images give the same input (the image is invisible)."""
    modality, policy, records = setup
    inputs = [prompt_inputs(modality.processor, r["messages"], open_images(r), "cpu") for r in records[:2]]
    ids, pixels = inputs[0]
    with torch.no_grad():
        plain = embed(policy, ids, pixels)
        half, masked = masked_embeddings(policy, ids, pixels, 0.5, torch.Generator().manual_seed(0))
        full = [masked_embeddings(policy, i, p, 1.0, torch.Generator().manual_seed(0))[0] for i, p in inputs]
        none = [masked_embeddings(policy, i, p, 0.0, torch.Generator().manual_seed(0))[0] for i, p in inputs]
    image_slots = ids[0] == policy.config.image_token_id
    assert int(image_slots.sum()) == 16 and int(masked.sum()) == 8 and bool((masked <= image_slots).all())
    assert bool((half[0, masked] == 0).all())
    torch.testing.assert_close(half[0, ~masked], plain[0, ~masked], atol=0, rtol=0)
    assert torch.equal(full[0], full[1]) and not torch.equal(none[0], none[1])


def test_pairs_keep_the_chosen_prefix_and_pass_the_filter(setup):
    """The rejected answer is the chosen answer's first ``cut`` sentences plus the biased
    continuation, whose word cosine with the replaced sentences is the recorded similarity,
    below the threshold. A threshold of 0 keeps nothing (a cosine is never below 0)."""
    modality, policy, records = setup
    pairs = bdhs(modality, policy, records, mask_fraction=0.75, similarity_threshold=0.9, max_new_tokens=8)
    assert pairs and len(pairs) <= len(records)
    assert any(pair["augment"]["cut"] > 0 for pair in pairs)  # the prefix is not always empty
    for pair in pairs:
        cut, parts = pair["augment"]["cut"], sentences(CHOSEN)
        prefix = " ".join(parts[:cut])
        assert pair["chosen"] == CHOSEN and pair["rejected"].startswith(prefix)
        continuation = pair["rejected"][len(prefix):].strip()
        similarity = word_cosine(continuation, " ".join(parts[cut:]))
        assert pair["augment"]["similarity"] == pytest.approx(similarity, abs=1e-12) and similarity < 0.9
    assert bdhs(modality, policy, records, similarity_threshold=0.0, max_new_tokens=4) == []
    assert len(modality.collate(pairs)) == len(pairs)
    with pytest.raises(ConfigError, match="mask_fraction"):
        bdhs(modality, policy, records, mask_fraction=1.5)
