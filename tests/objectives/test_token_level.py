"""Token-level and dense objectives against values worked out by hand from their papers.

Every expected value below is derived in plain ``math`` from the paper's formula, in the
comments next to it; the objective under test is never used to produce an expected value.
``softplus(-h) = log(1 + exp(-h)) = -log sigmoid(h)`` is the logistic loss of a logit ``h``.
Hand-worked tensors are float64 and compared with ``rtol = atol = 1e-12``; logged metrics
are compared by value only (their dtype is the logging helper's choice) with
``rtol = atol = 1e-6``, enough for a float32 scalar.
"""
from __future__ import annotations

import math
import re

import pytest
import torch

from mmalign.errors import ConfigError, DataError
from mmalign.objectives import Context, get, get_spec
from mmalign.objectives.token_level import SparseMaskHeads
from mmalign.surrogate import Surrogate

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}
METRIC_TOL = {"rtol": 1e-6, "atol": 1e-6, "check_dtype": False}
PAD = 99.0  # value at padded positions: it must never reach a loss


def nll(h: float) -> float:
    """-log sigmoid(h), by hand."""
    return math.log1p(math.exp(-h))


def tensor(rows, dtype=F64, grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=grad)


def token_surrogate(chosen, rejected, chosen_mask, rejected_mask, **kw) -> Surrogate:
    """A surrogate from per-token log-probs; ``chosen`` / ``rejected`` are their masked sums."""
    cu, ru = tensor(chosen), tensor(rejected)
    cm, rm = torch.tensor(chosen_mask, dtype=torch.bool), torch.tensor(rejected_mask, dtype=torch.bool)
    return Surrogate(chosen=torch.where(cm, cu, 0).sum(-1), rejected=torch.where(rm, ru, 0).sum(-1),
                     chosen_units=cu, rejected_units=ru, chosen_mask=cm, rejected_mask=rm, **kw)


def fields(**named) -> Context:
    return Context(fields={k: torch.tensor(v, dtype=torch.bool) for k, v in named.items()})


# -- dense_dpo (RLHF-V) -------------------------------------------------------------------------

def test_dense_dpo_weighs_changed_tokens_and_normalises_by_the_weighted_count():
    """log pi(y) = [sum_unchanged lp + gamma * sum_changed lp] / (N_u + gamma * N_c), beta 0.5, gamma 3.

    Row 0 chosen: log-ratios (pol - ref) (0.5, 0.5, 0.0), changed (F, T, F): weights (1, 3, 1),
      (0.5 + 1.5 + 0) / 5 = 0.4.
    Row 0 rejected: log-ratios (-0.2, -1.0, pad), changed (F, T, T-on-padding ignored):
      weights (1, 3), (-0.2 - 3.0) / 4 = -0.8.   h = 0.5 * (0.4 + 0.8) = 0.6.
    Row 1 chosen: log-ratios (0.0, 0.2, -0.5), changed (T, T, F): weights (3, 3, 1),
      (0 + 0.6 - 0.5) / 7 = 0.1 / 7.
    Row 1 rejected: log-ratios (-1.0, 0.0, 0.5), nothing changed: (-0.5) / 3.
      h = 0.5 * (0.1 / 7 + 0.5 / 3).
    """
    policy = token_surrogate([[-1.0, -2.0, -0.5], [-0.7, -0.2, -1.1]],
                             [[-1.0, -3.0, PAD], [-2.0, -1.0, -1.0]],
                             [[1, 1, 1], [1, 1, 1]], [[1, 1, 0], [1, 1, 1]])
    reference = token_surrogate([[-1.5, -2.5, -0.5], [-0.7, -0.4, -0.6]],
                                [[-0.8, -2.0, -PAD], [-1.0, -1.0, -1.5]],
                                [[1, 1, 1], [1, 1, 1]], [[1, 1, 0], [1, 1, 1]])
    ctx = fields(chosen_changed=[[0, 1, 0], [1, 1, 0]], rejected_changed=[[0, 1, 1], [0, 0, 0]])
    out = get("dense_dpo")(policy, reference, ctx, beta=0.5, gamma=3.0)
    h0, h1 = 0.5 * (0.4 + 0.8), 0.5 * (0.1 / 7 + 0.5 / 3)
    torch.testing.assert_close(out.loss, tensor([nll(h0), nll(h1)]), **TOL)
    torch.testing.assert_close(out.chosen_reward, tensor([0.5 * 0.4, 0.5 * 0.1 / 7]), **TOL)
    torch.testing.assert_close(out.rejected_reward, tensor([0.5 * -0.8, 0.5 * -0.5 / 3]), **TOL)


# -- mdpo and rdpo --------------------------------------------------------------------------------

def conditioned_pair(key: str) -> tuple[Surrogate, Surrogate]:
    """Two rows of sequence log-likelihoods plus the chosen response under another condition.

    Log-ratios (policy - reference): row 0 lr_w = -10 + 10.5 = 0.5, lr_l = -12 + 11.5 = -0.5,
    lr_other = -11 + 10 = -1.0; row 1 lr_w = -8 + 7 = -1.0, lr_l = -7 + 7.5 = 0.5, lr_other = -8 + 9 = 1.0.
    """
    policy = Surrogate(chosen=tensor([-10.0, -8.0]), rejected=tensor([-12.0, -7.0]),
                       terms={key: tensor([-11.0, -8.0])})
    reference = Surrogate(chosen=tensor([-10.5, -7.0]), rejected=tensor([-11.5, -7.5]),
                          terms={key: tensor([-10.0, -9.0])})
    return policy, reference


def test_mdpo_sums_dpo_conditional_and_anchor_terms():
    """L = -log s(b(lr_w - lr_l)) - log s(b(lr_w - lr_c)) - log s(b lr_w - delta), b 0.5, delta 0.2.

    Row 0: h_dpo = 0.5 * 1.0 = 0.5, h_co = 0.5 * 1.5 = 0.75, h_anc = 0.25 - 0.2 = 0.05.
    Row 1: h_dpo = 0.5 * -1.5 = -0.75, h_co = 0.5 * -2.0 = -1.0, h_anc = -0.5 - 0.2 = -0.7.
    """
    policy, reference = conditioned_pair("chosen|condition=corrupted")
    out = get("mdpo")(policy, reference, beta=0.5, delta=0.2)
    expected = [nll(0.5) + nll(0.75) + nll(0.05), nll(-0.75) + nll(-1.0) + nll(-0.7)]
    torch.testing.assert_close(out.loss, tensor(expected), **TOL)
    # mean corrupted-image reward: 0.5 * (-1.0 + 1.0) / 2 = 0
    torch.testing.assert_close(out.metrics["rewards/corrupted"], torch.tensor(0.0), **METRIC_TOL)


def test_rdpo_adds_the_visual_preference_over_the_retrieved_image():
    """L = -log s(b(lr_w - lr_l)) - log s(b(lr_w - lr_retrieved)), b = 1.

    Row 0: 1.0 and 1.5. Row 1: -1.5 and -2.0.
    """
    policy, reference = conditioned_pair("chosen|condition=retrieved")
    out = get("rdpo")(policy, reference, beta=1.0)
    torch.testing.assert_close(out.loss, tensor([nll(1.0) + nll(1.5), nll(-1.5) + nll(-2.0)]), **TOL)


# -- mask_dpo -------------------------------------------------------------------------------------

def test_mask_dpo_sums_log_ratios_over_kept_tokens_only():
    """L = -log s(b [sum_t m_w lr_w - sum_t m_l lr_l]), b = 0.1.

    Row 0: chosen lr (0.5, -1.0, 0.3) kept (T, F, T) -> 0.8; rejected lr (-0.4, 0.2, pad) kept
      (T, F, T-on-padding ignored) -> -0.4; h = 0.1 * 1.2 = 0.12.
    Row 1: chosen lr (0.1, 0.1, 0.1) kept nowhere -> 0; rejected lr (0.3, -0.6, 0.9) kept
      (F, T, T) -> 0.3; h = 0.1 * -0.3 = -0.03.
    """
    zeros = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    policy = token_surrogate([[0.5, -1.0, 0.3], [0.1, 0.1, 0.1]], [[-0.4, 0.2, PAD], [0.3, -0.6, 0.9]],
                             [[1, 1, 1], [1, 1, 1]], [[1, 1, 0], [1, 1, 1]])
    reference = token_surrogate(zeros, zeros, [[1, 1, 1], [1, 1, 1]], [[1, 1, 0], [1, 1, 1]])
    ctx = fields(chosen_token_mask=[[1, 0, 1], [0, 0, 0]], rejected_token_mask=[[1, 0, 1], [0, 1, 1]])
    out = get("mask_dpo")(policy, reference, ctx, beta=0.1)
    torch.testing.assert_close(out.loss, tensor([nll(0.12), nll(-0.03)]), **TOL)
    torch.testing.assert_close(out.chosen_reward, tensor([0.08, 0.0]), **TOL)


# -- tdpo, V = 3 ----------------------------------------------------------------------------------

# probability tables over a 3-token vocabulary and the KLs between them, by hand:
# KL(A||B) = 1/2 ln 2 + 1/4 ln(1/2) = ln2 / 4
# KL(C||A) = 1/3 [ln(2/3) + ln(4/3) + ln(4/3)] = ln(32/27) / 3
# KL(D||C) = 1/2 ln(3/2) + 1/2 ln(3/2) + 0 (D gives token 2 probability 0) = ln(3/2)
# KL(A||C) = 1/2 ln(3/2) + 1/4 ln(3/4) + 1/4 ln(3/4) = ln(9/8) / 2
A, B, C, D = (0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0)
UNIFORM = C


def vocab(rows, grad=False):
    return torch.tensor([[[math.log(p) if p > 0 else -math.inf for p in tok] for tok in row]
                         for row in rows], dtype=F64, requires_grad=grad)


def tdpo_pair(separate_leaves: bool = False) -> tuple[Surrogate, Surrogate]:
    """Two rows, U = 2, with token log-probs read off the tables at the label tokens.

    Row 0 chosen: labels (0, 1); ref (A, A), policy (B, A): lr = ln(1/4 / 1/2) + 0 = -ln 2,
      KL_w = ln2 / 4 + 0.  Row 0 rejected: label (2, pad); ref C, policy A:
      lr = ln(1/4 / 1/3) = ln(3/4), KL_l = ln(32/27) / 3.
    Row 1 chosen: labels (1, 0); ref (D, A), policy (C, C): lr = ln(1/3 / 1/2) * 2 = 2 ln(2/3),
      KL_w = ln(3/2) + ln(9/8) / 2.  Row 1 rejected: labels (1, 0); ref (B, C), policy (B, A):
      lr = 0 + ln(1/2 / 1/3) = ln(3/2), KL_l = 0 + ln(32/27) / 3.
    """
    def side(tables, labels, mask, grad):
        lp = vocab(tables, grad)
        units = torch.stack([lp[b, t, labels[b][t]] for b in range(2) for t in range(2)]).view(2, 2)
        return lp, units, torch.tensor(mask, dtype=torch.bool)

    surrogates = []
    for who, tables_c, tables_r in (("policy", [[B, A], [C, C]], [[A, UNIFORM], [B, A]]),
                                    ("reference", [[A, A], [D, A]], [[C, UNIFORM], [B, C]])):
        grad = who == "policy"
        vc, uc, mc = side(tables_c, [[0, 1], [1, 0]], [[1, 1], [1, 1]], grad)
        vr, ur, mr = side(tables_r, [[2, 0], [1, 0]], [[1, 0], [1, 1]], grad)
        chosen, rejected = torch.where(mc, uc, 0).sum(-1), torch.where(mr, ur, 0).sum(-1)
        if separate_leaves:  # sequence log-probs as their own leaves, off the vocab graph
            chosen, rejected = chosen.detach().requires_grad_(grad), rejected.detach().requires_grad_(grad)
        surrogates.append(Surrogate(chosen=chosen, rejected=rejected, chosen_units=uc, rejected_units=ur,
                                    chosen_mask=mc, rejected_mask=mr,
                                    extras={"vocab_logps_chosen": vc, "vocab_logps_rejected": vr}))
    return surrogates[0], surrogates[1]


LN2 = math.log(2)
KL_AB, KL_CA, KL_DC, KL_AC = LN2 / 4, math.log(32 / 27) / 3, math.log(1.5), math.log(9 / 8) / 2
TDPO_ROWS = [  # (lr_w, lr_l, KL_w, KL_l)
    (-LN2, math.log(0.75), KL_AB, KL_CA),
    (2 * math.log(2 / 3), math.log(1.5), KL_DC + KL_AC, KL_CA),
]


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_tdpo_with_a_three_token_vocabulary(variant):
    """TDPO1: h = b[(lr_w - lr_l) - (KL_l - KL_w)]; TDPO2: h = b[(lr_w - lr_l) - a (KL_l - KL_w)]
    (the stop-gradient does not change the value); b = 0.5, a = 0.5."""
    beta, alpha = 0.5, 0.5
    weight = 1.0 if variant == "tdpo1" else alpha
    expected = [nll(beta * ((lw - ll) - weight * (kl_l - kl_w))) for lw, ll, kl_w, kl_l in TDPO_ROWS]
    policy, reference = tdpo_pair()
    out = get("tdpo")(policy, reference, beta=beta, alpha=alpha, variant=variant)
    torch.testing.assert_close(out.loss, tensor(expected), **TOL)
    torch.testing.assert_close(out.metrics["kl/chosen"], torch.tensor((KL_AB + KL_DC + KL_AC) / 2),
                               **METRIC_TOL)
    # rewards as the authors' code reports them: beta * (log-ratio + sequential KL) per side
    torch.testing.assert_close(out.chosen_reward, tensor([beta * (lw + kl_w) for lw, _, kl_w, _ in TDPO_ROWS]), **TOL)
    torch.testing.assert_close(out.rejected_reward, tensor([beta * (ll + kl_l) for _, ll, _, kl_l in TDPO_ROWS]),
                               **TOL)


def test_tdpo2_stops_the_gradient_of_the_chosen_kl():
    """Off the sequence log-probs, the chosen vocabulary enters TDPO only through KL_w: TDPO1
    differentiates it; under TDPO2 (sg(KL_w)) no gradient reaches it."""
    grads = {}
    for variant in ("tdpo1", "tdpo2"):
        policy, reference = tdpo_pair(separate_leaves=True)
        get("tdpo")(policy, reference, variant=variant).loss.sum().backward()
        grads[variant] = policy.extras["vocab_logps_chosen"].grad
        assert policy.extras["vocab_logps_rejected"].grad.abs().sum() > 0
    assert grads["tdpo1"].abs().sum() > 0
    assert grads["tdpo2"] is None or not bool(grads["tdpo2"].any())


# -- sparsepo -------------------------------------------------------------------------------------

# V = 2 tables: U2 = (1/2, 1/2), Q = (1/4, 3/4); KL(U2||Q) = 1/2 ln 2 + 1/2 ln(2/3) = ln(4/3) / 2,
# KL(Q||U2) = 1/4 ln(1/2) + 3/4 ln(3/2).
U2, Q = (0.5, 0.5), (0.25, 0.75)
KL_UQ, KL_QU = math.log(4 / 3) / 2, 0.25 * math.log(0.5) + 0.75 * math.log(1.5)


def sparse_pair(hidden_chosen, hidden_rejected) -> tuple[Surrogate, Surrogate]:
    """Two rows, U = 3, V = 2. Per-token log-ratios (reference log-probs are 0) and KLs:

    Row 0 chosen lr (0.4, -2.0, 0.2); tokens ref/policy (U2/Q, U2/U2, Q/U2) -> KL (KL_UQ, 0, KL_QU).
    Row 0 rejected lr (-0.6, 5.0, pad); ref/policy (U2/Q, U2/U2, padding) -> KL (KL_UQ, 0).
    Row 1 chosen lr (0.1, 0.1, -0.3); (U2/U2, U2/U2, U2/Q) -> KL (0, 0, KL_UQ).
    Row 1 rejected lr (3.0, -0.4, -0.1); (U2/Q, Q/U2, U2/U2) -> KL (KL_UQ, KL_QU, 0).
    """
    mask_c, mask_r = [[1, 1, 1], [1, 1, 1]], [[1, 1, 0], [1, 1, 1]]
    policy = token_surrogate([[0.4, -2.0, 0.2], [0.1, 0.1, -0.3]], [[-0.6, 5.0, PAD], [3.0, -0.4, -0.1]],
                             mask_c, mask_r, extras={
                                 "vocab_logps_chosen": vocab([[Q, U2, U2], [U2, U2, Q]]),
                                 "vocab_logps_rejected": vocab([[Q, U2, U2], [Q, U2, U2]])})
    zeros = [[0.0] * 3] * 2
    reference = token_surrogate(zeros, zeros, mask_c, mask_r, extras={
        "vocab_logps_chosen": vocab([[U2, U2, Q], [U2, U2, U2]]),
        "vocab_logps_rejected": vocab([[U2, U2, U2], [U2, Q, U2]]),
        "hidden_chosen": tensor(hidden_chosen), "hidden_rejected": tensor(hidden_rejected)})
    return policy, reference


def test_sparsepo_reference_activation_masks():
    """m = min-max rescaled mean activation over the response; L = -log s(b (u - d)), b = 1.

    Row 0 chosen means (1, 0, 2) -> m (0.5, 0, 1): u_w = 0.2 + 0.2 = 0.4, d_w = 0.5 KL_UQ + KL_QU.
    Row 0 rejected means (3, 1, pad 100) -> m (1, 0, 0): u_l = -0.6, d_l = KL_UQ.
    Row 1 chosen means all 1 -> m (1, 1, 1): u_w = -0.1, d_w = KL_UQ.
    Row 1 rejected means (1, 2, 3) -> m (0, 0.5, 1): u_l = -0.2 - 0.1 = -0.3, d_l = 0.5 KL_QU.
    h = (u_w - u_l) - (d_l - d_w).
    """
    policy, reference = sparse_pair(
        [[[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]], [[1.0, 1.0], [0.0, 2.0], [2.0, 0.0]]],
        [[[3.0, 3.0], [1.0, 1.0], [100.0, 100.0]], [[0.0, 2.0], [2.0, 2.0], [6.0, 0.0]]])
    out = get("sparsepo")(policy, reference, Context(), beta=1.0, mask_source="reference")
    h0 = (0.4 + 0.6) - (KL_UQ - (0.5 * KL_UQ + KL_QU))
    h1 = (-0.1 + 0.3) - (0.5 * KL_QU - KL_UQ)
    torch.testing.assert_close(out.loss, tensor([nll(h0), nll(h1)]), **TOL)
    torch.testing.assert_close(out.chosen_reward, tensor([0.4, -0.1]), **TOL)


def learned_heads() -> SparseMaskHeads:
    """Heads with weights set by hand: m_u = ReLU(h0 - h1), m_d = ReLU(0.5 h0 + 0.5 h1 - 1)."""
    heads = SparseMaskHeads().double()
    heads(torch.zeros(1, 1, 2, dtype=F64))  # the lazy layer learns H = 2 here
    with torch.no_grad():
        heads.proj.weight.copy_(tensor([[1.0, -1.0], [0.5, 0.5]]))
        heads.proj.bias.copy_(tensor([0.0, -1.0]))
    return heads


@pytest.mark.parametrize("independent", [True, False])
def test_sparsepo_learned_masks(independent):
    """Hidden states and the masks of ``learned_heads`` (m_u, m_d) per token:

    Row 0 chosen (1,0) (0,1) (2,2) -> m_u (1, 0, 0), m_d (0, 0, 1).
    Row 0 rejected (3,1) (0,0) pad -> m_u (2, 0), m_d (1, 0).
    Row 1 chosen (1,1) (0.5,0) (0,4) -> m_u (0, 0.5, 0), m_d (0, 0, 1).
    Row 1 rejected (2,0) (0,3) (0,0) -> m_u (2, 0, 0), m_d (0, 0.5, 0).
    Rewards (both cases): row 0 u_w = 0.4, u_l = 2 * -0.6 = -1.2; row 1 u_w = 0.05, u_l = 6.0.
    Independent KL masks: d_w = KL_QU, d_l = KL_UQ; d_w = KL_UQ, d_l = 0.5 KL_QU.
    Common (m_d = m_u): d_w = KL_UQ, d_l = 2 KL_UQ; d_w = 0.5 * 0 = 0, d_l = 2 KL_UQ.
    L = -log s(b [(u_w - u_l) - (d_l - d_w)]), b = 0.5.
    """
    policy, reference = sparse_pair(
        [[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], [[1.0, 1.0], [0.5, 0.0], [0.0, 4.0]]],
        [[[3.0, 1.0], [0.0, 0.0], [PAD, PAD]], [[2.0, 0.0], [0.0, 3.0], [0.0, 0.0]]])
    heads = learned_heads()
    out = get("sparsepo")(policy, reference, Context(state=heads), beta=0.5,
                          mask_source="learned", independent_masks=independent)
    if independent:
        kls = [(KL_QU, KL_UQ), (KL_UQ, 0.5 * KL_QU)]
    else:
        kls = [(KL_UQ, 2 * KL_UQ), (0.0, 2 * KL_UQ)]
    rewards = [(0.4, -1.2), (0.05, 6.0)]
    expected = [nll(0.5 * ((uw - ul) - (dl - dw))) for (uw, ul), (dw, dl) in zip(rewards, kls)]
    torch.testing.assert_close(out.loss, tensor(expected), **TOL)
    out.loss.sum().backward()
    assert heads.proj.weight.grad.abs().sum() > 0  # the mask heads learn


# -- properties every objective shares ---------------------------------------------------------------

NAMES = ["dense_dpo", "mdpo", "rdpo", "mask_dpo", "tdpo", "sparsepo"]


def full_pair(b=2, u=3, v=4, h=5) -> tuple[Surrogate, Surrogate, Context, dict]:
    """Random surrogates carrying everything any objective here asks for; every tensor a
    leaf that requires grad, so we can see where gradients go."""
    gen = torch.Generator().manual_seed(0)
    labels = {s: torch.randint(0, v, (b, u), generator=gen) for s in ("chosen", "rejected")}
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    leaves = {}

    def surrogate(who):
        parts = {"terms": {}, "extras": {}}
        for side in ("chosen", "rejected"):
            logits = leaves[f"{who}_logits_{side}"] = torch.randn(b, u, v, generator=gen, dtype=F64,
                                                                 requires_grad=True)
            lp = logits.log_softmax(-1)
            units = lp.gather(-1, labels[side].unsqueeze(-1)).squeeze(-1)
            parts[side], parts[f"{side}_units"], parts[f"{side}_mask"] = (
                torch.where(mask, units, 0).sum(-1), units, mask)
            parts["extras"][f"vocab_logps_{side}"] = lp
            hidden = leaves[f"{who}_hidden_{side}"] = torch.randn(b, u, h, generator=gen, dtype=F64,
                                                                 requires_grad=True)
            parts["extras"][f"hidden_{side}"] = hidden
        for key in ("chosen|condition=corrupted", "chosen|condition=retrieved"):
            parts["terms"][key] = leaves[f"{who}_{key}"] = torch.randn(b, generator=gen, dtype=F64,
                                                                      requires_grad=True)
        return Surrogate(**parts)

    policy, reference = surrogate("policy"), surrogate("reference")
    names = ("chosen_changed", "rejected_changed", "chosen_token_mask", "rejected_token_mask")
    heads = SparseMaskHeads().double()
    heads(torch.zeros(1, 1, h, dtype=F64))  # materialise the lazy layer, then fix its weights
    with torch.no_grad():  # positive masks, so every token carries gradient
        heads.proj.weight.fill_(0.1)
        heads.proj.bias.fill_(1.0)
    ctx = Context(state=heads, fields={n: torch.rand(b, u, generator=gen) > 0.5 for n in names})
    return policy, reference, ctx, leaves


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_policy_and_never_the_reference(name):
    policy, reference, ctx, leaves = full_pair()
    out = get(name)(policy, reference, ctx)
    assert out.loss.shape == (2,) and bool(torch.isfinite(out.loss).all())
    out.loss.sum().backward()
    for key, leaf in leaves.items():
        if key.startswith("reference"):
            assert leaf.grad is None, key
    policy_grads = [leaf.grad for key, leaf in leaves.items() if key.startswith("policy")]
    assert any(g is not None and g.abs().sum() > 0 for g in policy_grads)


@pytest.mark.parametrize("name,params,per_row", [
    ("dense_dpo", {}, 1), ("mdpo", {}, 3), ("rdpo", {}, 2), ("mask_dpo", {}, 1),
    ("tdpo", {"variant": "tdpo1"}, 1), ("tdpo", {"variant": "tdpo2"}, 1),
    ("sparsepo", {"mask_source": "reference"}, 1), ("sparsepo", {"mask_source": "learned"}, 1),
])
def test_policy_equal_to_reference_gives_log_two_per_logistic_term(name, params, per_row):
    """At policy == reference every log-ratio and every KL is 0, so each logistic term is
    -log sigmoid(0) = ln 2 (mDPO has three such terms, rDPO two)."""
    policy, _, ctx, _ = full_pair()
    out = get(name)(policy, policy, ctx, **params)
    torch.testing.assert_close(out.loss.detach(), torch.full((2,), per_row * LN2, dtype=F64), **TOL)


def test_registered_specs():
    for name in NAMES:
        spec = get_spec(name)
        assert spec.reference == "required" and spec.citation and spec.fn.__doc__
    assert get_spec("tdpo").needs == {"token_logps", "vocab_logps"}
    assert get_spec("sparsepo").needs == {"token_logps", "vocab_logps", "hidden"}
    assert get_spec("sparsepo").make_state is SparseMaskHeads
    assert get_spec("dense_dpo").needs == {"token_logps", "fields:chosen_changed", "fields:rejected_changed"}
    assert get_spec("mdpo").needs == {"terms:chosen|condition=corrupted"}
    assert get_spec("rdpo").needs == {"terms:chosen|condition=retrieved"}
    assert not get_spec("tdpo").needs_ctx and get_spec("mask_dpo").needs_ctx


# -- clear errors -------------------------------------------------------------------------------------

def test_missing_field_names_the_field():
    policy, reference, ctx, _ = full_pair()
    del ctx.fields["rejected_changed"]
    with pytest.raises(DataError, match="field 'rejected_changed'"):
        get("dense_dpo")(policy, reference, ctx)
    with pytest.raises(DataError, match="chosen_token_mask"):
        get("mask_dpo")(policy, reference)  # no ctx at all


def test_field_of_the_wrong_shape_names_both_shapes():
    policy, reference, ctx, _ = full_pair()
    ctx.fields["chosen_token_mask"] = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(DataError, match=r"field 'chosen_token_mask'.*\(2, 4\).*\(2, 3\)"):
        get("mask_dpo")(policy, reference, ctx)


@pytest.mark.parametrize("name,key", [("mdpo", "chosen|condition=corrupted"), ("rdpo", "chosen|condition=retrieved")])
def test_missing_term_names_the_term_and_the_model(name, key):
    policy, reference, _, _ = full_pair()
    del reference.terms[key]
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}'.*reference"):
        get(name)(policy, reference)


def test_tdpo_refuses_a_reference_without_vocabulary_log_probs():
    policy, reference, _, _ = full_pair()
    reference.extras.clear()  # what a precomputed reference would hold
    with pytest.raises(ConfigError, match=r"vocab_logps_chosen.*precomputed"):
        get("tdpo")(policy, reference)


@pytest.mark.parametrize("name,params,match", [
    ("tdpo", {"variant": "tdpo3"}, "variant"),
    ("sparsepo", {"mask_source": "attention"}, "mask_source"),
    ("sparsepo", {"mask_source": "reference", "independent_masks": True}, "independent_masks"),
    ("dense_dpo", {"gamma": 0.0}, "gamma"),
])
def test_bad_parameters_are_config_errors(name, params, match):
    policy, reference, ctx, _ = full_pair()
    with pytest.raises(ConfigError, match=match):
        get(name)(policy, reference, ctx, **params)


def test_sparsepo_learned_without_state_and_objectives_without_reference():
    policy, reference, _, _ = full_pair()
    with pytest.raises(ConfigError, match=r"ctx\.state"):
        get("sparsepo")(policy, reference, Context())
    with pytest.raises(ConfigError, match="needs a reference model"):
        get("mdpo")(policy, None)


def test_token_objectives_need_token_log_probs():
    policy, reference, ctx, _ = full_pair()
    bare = Surrogate(chosen=policy.chosen, rejected=policy.rejected)
    with pytest.raises(ConfigError, match="token_logps"):
        get("dense_dpo")(bare, reference, ctx)
