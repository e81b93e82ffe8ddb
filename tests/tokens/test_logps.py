"""The log-prob rule of the token library on the tiny Llama equals the plain formula.

Plain formula on one unpadded sequence ``x = prompt + response`` with ``P`` prompt tokens::

    log pi(response | prompt) = sum_u log_softmax(logits[P + u - 1])[x[P + u]]

over the response tokens: the closing EOS is one of them, the prompt's BOS never is.
Ids are bytes of the tiny byte-level tokenizer; BOS is 257, EOS 258 (tests/test_text_modality.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mmalign.modalities.tokens.responses import response_span, response_tokens
from mmalign.modalities.tokens.scoring import Wants, pair_surrogate, score_pairs, score_responses
from mmalign.models.text import tiny_llama

BOS, EOS, PAD = 257, 258, 256
ATOL = 1e-5  # float32, 2 layers: paths differ by summation order only


def ids(text: str) -> list[int]:
    return list(text.encode())


PROMPTS = [[BOS, *ids("Hi")], [BOS, *ids("Tell me")]]
CHOSEN = [[*ids("yo"), EOS], [*ids("a longer answer"), EOS]]
REJECTED = [[*ids("no way"), EOS], [*ids("x"), EOS]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama().eval()


def plain_logp(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logps = F.log_softmax(model(input_ids=torch.tensor([prompt + response])).logits[0].float(), dim=-1)
    return sum(logps[len(prompt) + u - 1, token] for u, token in enumerate(response))


def test_response_rule_drops_bos_and_closes_with_one_eos():
    assert response_tokens([1, 2], BOS, EOS) == [1, 2, EOS]          # EOS appended
    assert response_tokens([BOS, 1, 2], BOS, EOS) == [1, 2, EOS]     # BOS is no response token
    assert response_tokens([1, EOS], BOS, EOS) == [1, EOS]           # a template's EOS is kept, once
    assert response_tokens([1, EOS, 10], BOS, EOS) == [1, EOS]       # what a template writes after it is not
    assert response_tokens([1, 2], None, None) == [1, 2]             # no EOS to close with
    assert response_span([BOS, 1], BOS, EOS) == (slice(1, 2), True)


@pytest.mark.parametrize("packed", [False, True])
def test_pair_scores_equal_the_plain_formula(model, packed):
    with torch.no_grad():
        out = pair_surrogate(*score_pairs(model, PROMPTS, CHOSEN, REJECTED, PAD, packed=packed))
    expected_chosen = torch.stack([plain_logp(model, p, r) for p, r in zip(PROMPTS, CHOSEN)])
    expected_rejected = torch.stack([plain_logp(model, p, r) for p, r in zip(PROMPTS, REJECTED)])
    assert_close(out.chosen, expected_chosen, atol=ATOL, rtol=0)
    assert_close(out.rejected, expected_rejected, atol=ATOL, rtol=0)
    # one unit per response token (EOS included), zero past each response
    assert out.chosen_mask.sum(-1).tolist() == [3, 16] and out.rejected_mask.sum(-1).tolist() == [7, 2]
    assert bool((out.rejected_units[~out.rejected_mask] == 0).all())


def test_unit_u_is_log_softmax_at_the_previous_position(model):
    """Unit by unit, for the first row: unit u = log_softmax(logits[P + u - 1])[y_u], and the
    vocab extra at u is that whole distribution (TDPO), zero past the response."""
    with torch.no_grad():
        scores = score_responses(model, PROMPTS, CHOSEN, PAD, wants=Wants(vocab=True, hidden=True))
        logits = model(input_ids=torch.tensor([PROMPTS[0] + CHOSEN[0]])).logits[0]
    expected = F.log_softmax(logits[2:5].float(), dim=-1)  # positions P-1 .. P+1 predict the 3 tokens
    assert_close(scores.vocab_logps[0, :3], expected, atol=ATOL, rtol=0)
    assert_close(scores.logps[0, :3], expected.gather(-1, torch.tensor(CHOSEN[0])[:, None]).squeeze(-1),
                 atol=ATOL, rtol=0)
    assert bool((scores.vocab_logps[0, 3:] == 0).all())
    # the hidden extra is what the LM head reads at those positions
    assert_close(F.log_softmax(model.lm_head(scores.hidden[0, :3]), -1), expected, atol=ATOL, rtol=0)
