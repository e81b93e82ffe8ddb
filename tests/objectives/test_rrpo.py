"""RRPO (Sarkar & Etemad 2025, arXiv:2504.12083) against values worked out by hand.

    r(x, y_i) = beta * sum_{j in y_i} [log pi(t_j | .) - log ref(t_j | .)]     (one sub-sequence)
    u = sum_i [r(x, y+_i) - r(x, y-_i)]
    D_TKL(x, y+) = sum_t KL(ref(. | x, y+_<t) || pi(. | x, y+_<t))
    L = -log sigmoid(u) + alpha * D_TKL(x, y+)

Every expected value is derived in plain ``math`` in the comments next to it; the objective
under test never produces an expected value. Token log-probs are read off small probability
tables over a 3-token vocabulary at each token's label, so per-token log-probs and vocabulary
log-probs agree as a model's would. Hand-worked tensors are float64 and compared with
``rtol = atol = 1e-12``; logged metrics (float32 scalars) with ``1e-6``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mmalign import config
from mmalign.errors import ConfigError, DataError
from mmalign.objectives import Context, get, get_spec
from mmalign.objectives.compose import compose
from mmalign.objectives.rrpo import subsequence_sums
from mmalign.surrogate import Surrogate
from mmalign.train import precompute

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}
METRIC_TOL = {"rtol": 1e-6, "atol": 1e-6, "check_dtype": False}
ROOT = Path(__file__).resolve().parents[2]
PAD = 99.0  # a padded token's log-prob: it must never reach a loss

# probability tables over a 3-token vocabulary
A, B, C, D = (0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0)
LN2 = math.log(2)
# KLs between them, by hand (a vocabulary entry the reference gives probability 0 adds 0):
KL_AB = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0)  # = ln2 / 4
KL_CA = (math.log((1 / 3) / 0.5) + 2 * math.log((1 / 3) / 0.25)) / 3                     # = ln(32/27) / 3
KL_DC = 0.5 * math.log(0.5 / (1 / 3)) * 2                                                # = ln(3/2)
KL_AC = 0.5 * math.log(0.5 / (1 / 3)) + 2 * 0.25 * math.log(0.25 / (1 / 3))              # = ln(9/8) / 2
KL_CB = (math.log((1 / 3) / 0.25) * 2 + math.log((1 / 3) / 0.5)) / 3                     # = ln(32/27) / 3
KL_BA = 0.25 * math.log(0.25 / 0.5) + 0.5 * math.log(0.5 / 0.25)                         # = ln2 / 4


def test_the_hand_kls_are_the_closed_forms():
    for got, want in ((KL_AB, LN2 / 4), (KL_CA, math.log(32 / 27) / 3), (KL_DC, math.log(1.5)),
                      (KL_AC, math.log(9 / 8) / 2), (KL_CB, math.log(32 / 27) / 3), (KL_BA, LN2 / 4)):
        assert got == pytest.approx(want, rel=1e-14)


def nll(h: float) -> float:
    """-log sigmoid(h), by hand."""
    return math.log1p(math.exp(-h))


def sigmoid(h: float) -> float:
    return 1 / (1 + math.exp(-h))


def logs(table) -> list[float]:
    return [math.log(p) if p > 0 else -math.inf for p in table]


# Two rows, U = 3, V = 3; "labels" are the response tokens, "changed" the tokens of the
# sub-sequences where chosen and rejected differ (what the token diff of the pair marks).
#
# Row 0 chosen: labels (0, 1, 2), changed (F, T, T): one sub-sequence, tokens 1..2.
#   policy tables (A, B, A), reference (A, A, C); token log-ratios:
#   t0 ln(1/2 / 1/2) = 0 (unchanged); t1 ln(B[1] / A[1]) = ln(1/2 / 1/4) = ln 2;
#   t2 ln(A[2] / C[2]) = ln(1/4 / 1/3) = ln(3/4).   Sub-sequence: ln 2 + ln(3/4) = ln(3/2).
#   D_TKL = KL(A||A) + KL(A||B) + KL(C||A) = 0 + KL_AB + KL_CA.
# Row 0 rejected: labels (0, 2, pad), changed (F, T, T-on-padding: ignored).
#   policy (A, C, -), reference (A, A, -): t1 ln(C[2] / A[2]) = ln(1/3 / 1/4) = ln(4/3).
#   u_0 = beta * [ln(3/2) - ln(4/3)] = beta * ln(9/8).
#   (its own D_TKL, used after a swap: KL(A||A) + KL(A||C) = KL_AC)
# Row 1 chosen: labels (1, 0, 1), changed (T, F, T): two sub-sequences, {t0} and {t2}.
#   policy (C, A, B), reference (D, A, A): t0 ln(C[1] / D[1]) = ln(1/3 / 1/2) = ln(2/3);
#   t1 0 (unchanged); t2 ln(B[1] / A[1]) = ln 2.   Sub-sequences: ln(2/3) and ln 2.
#   D_TKL = KL(D||C) + KL(A||A) + KL(A||B) = KL_DC + KL_AB.
# Row 1 rejected: labels (1, 1, 0), changed (T, F, F): one sub-sequence {t0}, the chosen
#   response's second sub-sequence faces an empty counterpart (reward 0).
#   policy (B, A, A), reference (C, A, B): t0 ln(B[1] / C[1]) = ln(1/2 / 1/3) = ln(3/2);
#   t2 ln(A[0] / B[0]) = ln 2 is unchanged and must not count.
#   u_1 = beta * [ln(2/3) + ln 2 - ln(3/2)] = beta * ln(8/9).
#   (its own D_TKL: KL(C||B) + KL(A||A) + KL(B||A) = KL_CB + KL_BA)
LABELS = {"chosen": [[0, 1, 2], [1, 0, 1]], "rejected": [[0, 2, 0], [1, 1, 0]]}
MASKS = {"chosen": [[1, 1, 1], [1, 1, 1]], "rejected": [[1, 1, 0], [1, 1, 1]]}
CHANGED = {"chosen": [[0, 1, 1], [1, 0, 1]], "rejected": [[0, 1, 1], [1, 0, 0]]}
TABLES = {("policy", "chosen"): [[A, B, A], [C, A, B]], ("reference", "chosen"): [[A, A, C], [D, A, A]],
          ("policy", "rejected"): [[A, C, C], [B, A, A]], ("reference", "rejected"): [[A, A, C], [C, A, B]]}
SUBSEQUENCES = {  # per-token log-ratio sums of each sub-sequence, in order; then zeros
    "chosen": [[math.log(1.5), 0.0, 0.0], [math.log(2 / 3), LN2, 0.0]],
    "rejected": [[math.log(4 / 3), 0.0, 0.0], [math.log(1.5), 0.0, 0.0]],
}
LOG_RATIO_SUM = {"chosen": [math.log(1.5), math.log(4 / 3)], "rejected": [math.log(4 / 3), math.log(1.5)]}
D_TKL = {"chosen": [KL_AB + KL_CA, KL_DC + KL_AB], "rejected": [KL_AC, KL_CB + KL_BA]}


def pair(grad: bool = False) -> tuple[Surrogate, Surrogate]:
    """Policy and reference surrogates of the two rows above. Per-token log-probs and the
    vocabulary log-probs are separate leaves (so each gradient can be read on its own);
    padded tokens hold PAD and an all-zero vocabulary row, as the token modalities leave them."""
    out = []
    for model in ("policy", "reference"):
        values = {"extras": {}}
        for side in ("chosen", "rejected"):
            mask = torch.tensor(MASKS[side], dtype=torch.bool)
            tables = [[logs(t) for t in row] for row in TABLES[model, side]]
            units = [[tables[b][t][LABELS[side][b][t]] if MASKS[side][b][t] else PAD for t in range(3)]
                     for b in range(2)]
            vocab = torch.tensor(tables, dtype=F64) * 1.0
            vocab = torch.where(mask[..., None], vocab, torch.zeros_like(vocab))
            wants = grad and model == "policy"
            values[f"{side}_units"] = torch.tensor(units, dtype=F64, requires_grad=wants)
            values[f"{side}_mask"] = mask
            values[side] = torch.where(mask, values[f"{side}_units"].detach(), 0.0).sum(-1)
            values["extras"][f"vocab_logps_{side}"] = vocab.requires_grad_(wants)
        out.append(Surrogate(**values))
    return out[0], out[1]


def changed(swap: bool = False) -> Context:
    sides = {"chosen": "rejected", "rejected": "chosen"} if swap else {s: s for s in ("chosen", "rejected")}
    return Context(fields={f"{new}_changed": torch.tensor(CHANGED[old], dtype=torch.bool)
                           for old, new in sides.items()})


BETA, ALPHA = 0.5, 0.1
U = [BETA * math.log(9 / 8), BETA * math.log(8 / 9)]


def test_rrpo_by_hand_rewards_kl_and_loss():
    """L_b = -log sigmoid(u_b) + alpha * D_TKL(y+_b), beta 0.5, alpha 0.1 (the rows above)."""
    policy, reference = pair()
    out = get("rrpo")(policy, reference, changed(), beta=BETA, alpha=ALPHA)
    # each side's reward: beta times the sum of its sub-sequence log-ratios
    for side in ("chosen", "rejected"):
        want = torch.tensor([BETA * v for v in LOG_RATIO_SUM[side]], dtype=F64)
        torch.testing.assert_close(getattr(out, f"{side}_reward"), want, **TOL)
    expected = [nll(U[b]) + ALPHA * D_TKL["chosen"][b] for b in range(2)]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=F64), **TOL)
    # u_0 = beta ln(9/8) > 0 (a win), u_1 = -u_0 (a loss): margins mean 0, accuracy 1/2
    m = out.metrics
    torch.testing.assert_close(m["rewards/margins"], torch.tensor(0.0), **METRIC_TOL)
    torch.testing.assert_close(m["rewards/accuracies"], torch.tensor(0.5), **METRIC_TOL)
    torch.testing.assert_close(m["rewards/margins_max"], torch.tensor(U[0]), **METRIC_TOL)
    torch.testing.assert_close(m["rewards/margins_min"], torch.tensor(U[1]), **METRIC_TOL)
    # rewards/chosen = beta (ln(3/2) + ln(4/3)) / 2 = beta ln2 / 2, rewards/rejected alike
    torch.testing.assert_close(m["rewards/chosen"], torch.tensor(BETA * LN2 / 2), **METRIC_TOL)
    torch.testing.assert_close(m["rewards/rejected"], torch.tensor(BETA * LN2 / 2), **METRIC_TOL)
    torch.testing.assert_close(m["kl/chosen"], torch.tensor(sum(D_TKL["chosen"]) / 2), **METRIC_TOL)
    # sub-sequences per response: chosen (1 + 2) / 2, rejected (1 + 1) / 2; changed tokens:
    # chosen 4 of 6, rejected 2 of 5 (the padded one does not count); every pair differs
    torch.testing.assert_close(m["rrpo/subsequences_chosen"], torch.tensor(1.5), **METRIC_TOL)
    torch.testing.assert_close(m["rrpo/subsequences_rejected"], torch.tensor(1.0), **METRIC_TOL)
    torch.testing.assert_close(m["rrpo/changed_chosen"], torch.tensor(4 / 6), **METRIC_TOL)
    torch.testing.assert_close(m["rrpo/changed_rejected"], torch.tensor(2 / 5), **METRIC_TOL)
    torch.testing.assert_close(m["rrpo/unchanged_rows"], torch.tensor(0.0), **METRIC_TOL)


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_each_sub_sequence_reward(side):
    """Sub-sequence k of a row is its (k+1)-th run of consecutive changed tokens; its reward
    is beta times the log-ratio sum over the run (values in SUBSEQUENCES, worked out above)."""
    policy, reference = pair()
    lr = getattr(policy, f"{side}_units") - getattr(reference, f"{side}_units")
    runs = torch.tensor(CHANGED[side], dtype=torch.bool) & getattr(policy, f"{side}_mask")
    got = BETA * subsequence_sums(lr, runs)
    torch.testing.assert_close(got, BETA * torch.tensor(SUBSEQUENCES[side], dtype=F64), **TOL)


def test_sub_sequences_split_at_unchanged_tokens_and_skip_padding():
    """Runs (T, T, F, T, F) -> sums (1 + 2, 4); (F, T, F, T, F) -> (1, 1): the inf at the
    end is outside every run (a padded token is never changed) and never reaches a sum."""
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, math.inf]])
    runs = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 0, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(subsequence_sums(values, runs),
                               torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]]))


def test_identical_policy_and_reference_give_log_2():
    """Policy = reference: every log-ratio and KL is 0, so u = 0 and L = -log sigmoid(0) = ln 2
    whatever the sub-sequences; rewards are 0 and a tie counts 1/2 toward accuracy."""
    _, reference = pair()
    out = get("rrpo")(reference, reference, changed(), beta=BETA, alpha=ALPHA)
    torch.testing.assert_close(out.loss, torch.full((2,), LN2, dtype=F64), **TOL)
    torch.testing.assert_close(out.chosen_reward, torch.zeros(2, dtype=F64), **TOL)
    torch.testing.assert_close(out.metrics["kl/chosen"], torch.tensor(0.0), **METRIC_TOL)
    torch.testing.assert_close(out.metrics["rewards/accuracies"], torch.tensor(0.5), **METRIC_TOL)


def test_gradients_by_hand():
    """dL/d lr_t = -beta * sigmoid(-u) on a changed chosen token, +beta * sigmoid(-u) on a
    changed rejected token and 0 on every unchanged one (the refined reward sees only the
    sub-sequences). The KL term alpha * sum_v ref_v (log ref_v - log pi_v) gives the chosen
    vocabulary log-probs the gradient -alpha * ref_v; the rejected vocabulary gets none, and
    the reference nothing at all."""
    policy, reference = pair(grad=True)
    reference.chosen_units.requires_grad_(True)  # even asking for it, the reference gets none
    get("rrpo")(policy, reference, changed(), beta=BETA, alpha=ALPHA).loss.sum().backward()
    for side, sign in (("chosen", -1.0), ("rejected", 1.0)):
        runs = torch.tensor(CHANGED[side], dtype=torch.bool) & policy.__getattribute__(f"{side}_mask")
        want = torch.tensor([[sign * BETA * sigmoid(-U[b]) if runs[b, t] else 0.0 for t in range(3)]
                             for b in range(2)], dtype=F64)
        torch.testing.assert_close(getattr(policy, f"{side}_units").grad, want, **TOL)
    ref_probs = torch.tensor(TABLES["reference", "chosen"], dtype=F64)
    torch.testing.assert_close(policy.extras["vocab_logps_chosen"].grad, -ALPHA * ref_probs, **TOL)
    assert policy.extras["vocab_logps_rejected"].grad is None
    assert reference.chosen_units.grad is None


def test_swapping_chosen_and_rejected():
    """The swapped pair (sides and their changed tokens exchanged) has margin -u and its KL
    on the new chosen response, the old rejected one: L' = -log sigmoid(-u) + alpha * D_TKL(y-)."""
    policy, reference = pair()

    def swapped(s: Surrogate) -> Surrogate:
        return Surrogate(chosen=s.rejected, rejected=s.chosen, chosen_units=s.rejected_units,
                         rejected_units=s.chosen_units, chosen_mask=s.rejected_mask,
                         rejected_mask=s.chosen_mask,
                         extras={"vocab_logps_chosen": s.extras["vocab_logps_rejected"],
                                 "vocab_logps_rejected": s.extras["vocab_logps_chosen"]})

    out = get("rrpo")(swapped(policy), swapped(reference), changed(swap=True), beta=BETA, alpha=ALPHA)
    expected = [nll(-U[b]) + ALPHA * D_TKL["rejected"][b] for b in range(2)]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=F64), **TOL)


def test_alpha_zero_drops_the_kl_and_its_need():
    """alpha = 0 (the paper's ablation without D_TKL): L = -log sigmoid(u), and vocabulary
    log-probs are neither needed nor read."""
    spec = get_spec("rrpo")
    assert "vocab_logps" in spec.needs_for({}) and "vocab_logps" not in spec.needs_for({"alpha": 0})
    policy, reference = pair()
    policy.extras, reference.extras = {}, {}
    out = get("rrpo")(policy, reference, changed(), beta=BETA, alpha=0)
    torch.testing.assert_close(out.loss, torch.tensor([nll(u) for u in U], dtype=F64), **TOL)
    assert "kl/chosen" not in out.metrics


def test_defaults_and_declaration():
    """Defaults from the official LLaVA-Video recipe (beta 0.1, alpha 0.01): on the rows above
    L_b = -log sigmoid(0.1 * lr-margin_b) + 0.01 * D_TKL(y+_b), with lr-margins ln(9/8), ln(8/9)."""
    spec = get_spec("rrpo")
    assert spec.reference == "required" and spec.paired and "arXiv:2504.12083" in spec.citation
    assert spec.needs == {"token_logps", "vocab_logps", "fields:chosen_changed", "fields:rejected_changed"}
    out = get("rrpo")(*pair(), changed())
    expected = [nll(0.1 * math.log(9 / 8)) + 0.01 * D_TKL["chosen"][0],
                nll(0.1 * math.log(8 / 9)) + 0.01 * D_TKL["chosen"][1]]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=F64), **TOL)


def test_bad_inputs_are_named():
    policy, reference = pair()
    with pytest.raises(DataError, match="rrpo.*'rejected_changed'"):
        get("rrpo")(policy, reference, Context(fields={"chosen_changed": torch.ones(2, 3, dtype=torch.bool)}))
    with pytest.raises(ConfigError, match="alpha must lie in"):
        get("rrpo")(policy, reference, changed(), alpha=-0.1)
    with pytest.raises(ConfigError, match="beta must be a positive number"):
        get("rrpo")(policy, reference, changed(), beta=0.0)
    with pytest.raises(ConfigError, match="needs a reference model"):
        get("rrpo")(policy, None, changed())
    reference.extras = {}
    with pytest.raises(ConfigError, match="vocab_logps_chosen.*reference model.*adapters_off"):
        get("rrpo")(policy, reference, changed())


# -- with the trainer: a tiny text model ----------------------------------------------------

def text_recipe(folder: Path, **sections) -> config.Recipe:
    raw = {
        "model": {"modality": "text", "builder": "tiny_llama",
                  "builder_args": {"hidden_size": 16, "layers": 1, "heads": 2},
                  "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 48}},
        "data": {"train": str(ROOT / "assets/text_prefs/train.jsonl"), "schema": "preference"},
        "objective": {"name": "rrpo", "params": {"beta": 0.5, "alpha": 0.05}},
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": 8, "lr": 2e-2, "max_steps": 2, "max_grad_norm": 1.0},
        "eval": {"every": 0},
        "logging": {"every": 1, "tensorboard": False, "progress": False, "output_dir": str(folder)},
    }
    return config.from_dict(config.merge(raw, sections), source="<rrpo-test>")


def test_precomputed_reference_is_refused_with_the_reason(tmp_path):
    """The KL term needs the reference's [tokens x vocabulary] log-probs, which a precomputed
    reference does not store: the recipe is refused before any model loads, naming rrpo, why
    and what to use instead."""
    from mmalign.train.run import build

    recipe = text_recipe(tmp_path / "run",
                         reference={"strategy": "precomputed", "precompute_with": "adapters_off"})
    with pytest.raises(ConfigError) as err:
        build(recipe)
    message = str(err.value)
    for part in ("'precomputed' cannot store vocab_logps", "'rrpo'", "full token distribution",
                 "KL", "adapters_off", "copy"):
        assert part in message, message
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_refusal_names_exactly_the_recipes_objective():
    """Given the recipe's (composed) objective, the refusal names the terms that need what
    cannot be stored, and nothing else; without the KL (alpha 0) nothing is refused."""
    summed = compose([("rrpo", 1.0, {}), ("sft", 0.5, {})])
    with pytest.raises(ConfigError, match=r"which objective 'rrpo' needs from the reference: vocab_logps is "
                                          r"the reference's full token distribution"):
        precompute.check_storable(summed.needs, False, summed)
    plain = compose([("rrpo", 1.0, {"alpha": 0})])
    precompute.check_storable(plain.needs, False, plain)


def test_trains_a_tiny_text_model_and_matches_the_formula(tmp_path):
    """Two steps with a live reference (LoRA adapters off): step 1 starts at policy =
    reference (loss ln 2, KL 0); after training, the objective on a fresh batch equals the
    formula evaluated by hand on the modality's own surrogates and changed-token fields."""
    from mmalign.train.run import train, unwrap

    s = train(text_recipe(tmp_path / "run"))
    first, second = s.history[0], s.history[1]
    assert first["loss"] == pytest.approx(LN2, abs=1e-6)
    assert first["kl/chosen"] == pytest.approx(0.0, abs=1e-7)
    assert first["rrpo/unchanged_rows"] == 0.0 and first["rrpo/subsequences_chosen"] >= 1.0
    assert second["kl/chosen"] > 0 and math.isfinite(second["loss"])

    with torch.no_grad():
        batch = s.modality.collate(s.train_records[:4])
        draw = s.modality.draw(batch, s.recipe.train.seed, unwrap(s, s.scorer))
        pol = s.scorer(batch, draw, s.needs)
        ref = s.reference.surrogate(s.modality, s.scorer, batch, draw, s.needs, like=pol)
        out = get("rrpo")(pol, ref, Context(fields=batch.fields), beta=0.5, alpha=0.05)
        # by hand: u = beta * (sum of changed chosen log-ratios - sum of changed rejected ones)
        sums = []
        for side in ("chosen", "rejected"):
            keep = batch.fields[f"{side}_changed"] & getattr(pol, f"{side}_mask")
            lr = getattr(pol, f"{side}_units").double() - getattr(ref, f"{side}_units").double()
            sums.append((lr * keep).sum(-1))
        u = 0.5 * (sums[0] - sums[1])
        ref_logps = ref.extras["vocab_logps_chosen"].double()
        pol_logps = pol.extras["vocab_logps_chosen"].double()
        kl_t = (ref_logps.exp() * (ref_logps - pol_logps)).sum(-1)
        d_tkl = (kl_t * pol.chosen_mask).sum(-1)
        expected = -torch.nn.functional.logsigmoid(u) + 0.05 * d_tkl
    assert bool((d_tkl > 0).all()) and bool((u != 0).all())  # trained: neither term is trivial
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
