"""Truncation never cuts the prompt: only ``max_prompt_length``, asked for explicitly, makes it
shorter (keeping its end); responses are cut to what ``max_length`` leaves."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmalign.errors import DataError
from mmalign.modalities.tokens.truncation import PromptTooLong, fit, kept


@given(prompt=st.integers(1, 40), lengths=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       max_length=st.integers(2, 60), truncation=st.sampled_from(["keep_end", "keep_start"]))
def test_the_prompt_is_never_cut_and_every_response_fits(prompt, lengths, max_length, truncation):
    tokens = list(range(prompt))
    if prompt >= max_length:
        with pytest.raises(PromptTooLong):
            fit(tokens, lengths, max_length, truncation)
        return
    fitted, keeps = fit(tokens, lengths, max_length, truncation)
    assert fitted == tokens
    for length, keep in zip(lengths, keeps):
        response = list(range(length))[keep]
        assert 1 <= len(response) == min(length, max_length - prompt)
        # keep_end keeps the ending (the EOS that closes the response), keep_start the start
        assert response[-1 if truncation == "keep_end" else 0] == (length - 1 if truncation == "keep_end" else 0)


def test_max_prompt_length_keeps_the_prompt_end():
    prompt, (keep,) = fit([1, 2, 3, 4, 5], [4], max_length=6, max_prompt_length=3)
    assert prompt == [3, 4, 5] and list("abcd")[keep] == list("bcd")


def test_no_limit_keeps_everything():
    assert fit([1, 2], [100], max_length=None) == ([1, 2], [slice(0, 100)])
    assert kept(5, None, "keep_start") == slice(0, 5)


def test_plugins_refuse_a_prompt_that_leaves_no_room(tmp_path):
    """Text names file, row and field; neither plugin shortens the prompt to make room."""
    from mmalign.modalities.text import TextModality
    from mmalign.modality import ModelSpec

    modality = TextModality(chat_template=False, max_length=4)
    modality.load_policy(ModelSpec(builder="tiny_llama"))
    with pytest.raises(DataError, match="the prompt alone is 5 tokens, which leaves no room"):
        modality.collate([{"sample_id": "s", "prompt": "Hello", "chosen": "a", "rejected": "b"}])
    batch = TextModality(chat_template=False, max_length=7, truncation="keep_start")
    batch.tokenizer = modality.tokenizer
    out = batch.collate([{"sample_id": "s", "prompt": "Hello", "chosen": "abc", "rejected": "b"}])
    assert out.inputs["prompt_ids"] == [list(b"Hello")] and out.inputs["chosen_ids"] == [list(b"ab")]
