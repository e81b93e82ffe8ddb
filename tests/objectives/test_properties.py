"""Properties every registered objective keeps on random finite inputs (hypothesis).

The objectives are read from the registry, so an objective registered later is covered by
the generic properties without editing this file. Inputs are built from the objective's
declared needs and nothing more (per-token terms and masks for ``token_logps``, vocabulary
log-probs for ``vocab_logps``, hidden states for ``hidden``, named ``[B]`` log-likelihoods for
``terms:<name>``, batch fields for ``fields:<name>``, labels for unpaired rows, a state from
``make_state``), so an objective that reads something it did not declare fails here. Its
optional needs are filled or left out at random: both must work.

Per-token log-probs are float32 values in [-50, 0]; the surrogates are their masked sums,
so sequence log-likelihoods reach -200 and log-ratios +-200. Padding positions hold values
of the same range that must never count.

Properties:

* (a) the per-row loss is finite and has one value per row;
* (b) the gradient of the summed loss is finite for every policy input (per-token log-probs,
  vocabulary logits, named terms) and every trainable state parameter;
* (c) swapping chosen and rejected does what the objective's paper implies. Always: the
  implicit rewards exchange places, so the reward margin flips sign. Then, per objective,
  the law written next to it in ``LAWS``: for a symmetric loss ``f(margin)`` the swapped
  loss is ``f(-margin)``; for losses that anchor each response, or that depend on one side
  only, the loss evaluated at the exchanged rewards. Unpaired objectives (KTO) have no
  chosen / rejected to swap; their counterpart is flipping every row's label.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmalign.objectives import Context, get_spec, names
from mmalign.surrogate import ObjectiveOutput, Surrogate

SIDES = ("chosen", "rejected")
MODELS = ("policy", "reference")
VOCAB, HIDDEN = 5, 3
#: per-token log-probs; width 32 so every drawn value is exactly a float32. Half of them
#: come from tokens the model is all but certain of (probability within 2^-20 of 1), where
#: log(1 - p) and 1 / log p are at their edge (ORPO's odds, length-normalised rewards)
LOGP = st.one_of(st.floats(min_value=-50.0, max_value=0.0, width=32),
                 st.floats(min_value=-2.0**-20, max_value=0.0, width=32))
#: a named extra sequence log-likelihood (a whole response under another condition)
TERM = st.floats(min_value=-200.0, max_value=0.0, width=32)
#: float32 rounding of a margin of +-200 scaled by beta, carried through the loss
TOL = {"rtol": 1e-4, "atol": 1e-4}

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: parameter settings tested besides the defaults: other divergences and variants whose code
#: paths the defaults do not reach
EXTRA_PARAMS: dict[str, list[dict[str, Any]]] = {
    "dpo": [{"divergence": "forward_kl"}, {"divergence": "js"},
            {"divergence": "alpha", "alpha": 0.3}, {"label_smoothing": 0.2},
            {"max_margin": 1.0}, {"max_margin": 0.5, "label_smoothing": 0.2}],
    "ipo": [{"normalize": False}],
    "tdpo": [{"variant": "tdpo1"}],
    "sparsepo": [{"mask_source": "reference"}, {"independent_masks": True}],
    "kto": [{"desirable_weight": 2.0, "undesirable_weight": 0.5}],
}
CASES = [(name, params) for name in names() for params in [{}] + EXTRA_PARAMS.get(name, [])]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: torch's thread pool costs more than it saves (milliseconds per
    log-sigmoid on a busy machine, against microseconds on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_id(case) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


# -- inputs -----------------------------------------------------------------------------------

@st.composite
def raw_batches(draw, needs: frozenset[str], paired: bool) -> dict[str, Any]:
    """Plain values of one batch (lists and seeds); :func:`build` makes fresh tensors from
    them, as given or with chosen and rejected swapped."""
    b = draw(st.integers(1, 4))
    raw: dict[str, Any] = {"b": b, "u": {}, "mask": {}, "units": {}, "terms": {}, "fields": {}, "same": {}}
    for side in (SIDES if paired else ("chosen",)):
        u = draw(st.integers(1, 4))
        lengths = draw(st.lists(st.integers(1, u), min_size=b, max_size=b))
        raw["u"][side] = u
        raw["mask"][side] = [[t < n for t in range(u)] for n in lengths]
        for model in MODELS:
            values = draw(st.lists(LOGP, min_size=b * u, max_size=b * u))
            raw["units"][model, side] = [values[i * u:(i + 1) * u] for i in range(b)]
        raw["same"][side] = draw(st.booleans())
        if raw["same"][side]:
            # the policy is the reference, as at step 0: every log-ratio, margin and KL is 0
            raw["units"]["policy", side] = raw["units"]["reference", side]
    for need in sorted(needs):
        if need.startswith("terms:"):
            # "as given" and "swapped" values: a term about the chosen response
            # ("chosen|condition=corrupted") belongs to the other response after a swap
            for model in MODELS:
                for version in ("given", "swapped"):
                    raw["terms"][model, need[6:], version] = draw(st.lists(TERM, min_size=b, max_size=b))
        elif need.startswith("fields:"):
            name = need[7:]
            side = next((s for s in SIDES if name.startswith(s + "_")), None)
            if side is not None and side in raw["u"]:  # per-token bools aligned with that side
                n = b * raw["u"][side]
                flags = draw(st.lists(st.booleans(), min_size=n, max_size=n))
                raw["fields"][name] = [flags[i * raw["u"][side]:(i + 1) * raw["u"][side]] for i in range(b)]
            else:  # any other field: one number per row
                raw["fields"][name] = draw(st.lists(st.floats(-10, 10, width=32), min_size=b, max_size=b))
    raw["label"] = draw(st.lists(st.booleans(), min_size=b, max_size=b))
    raw["seed"] = draw(st.integers(0, 2**31 - 1))
    raw["logit_scale"] = draw(st.floats(0.0, 20.0))
    raw["hidden_scale"] = draw(st.floats(0.0, 10.0))
    raw["flat_hidden"] = draw(st.booleans())  # every token alike: MaPO's min-max has span 0
    return raw


def _generator(raw: dict, model: int, side: int, kind: int) -> torch.Generator:
    """The generator of one random tensor: vocabulary logits (kind 0) or hidden states
    (kind 1) of one side of one model; the reference's when the policy is the reference."""
    if raw["same"][SIDES[side]]:
        model = 1
    return torch.Generator().manual_seed(raw["seed"] * 8 + model + 2 * side + 4 * kind)


def _other(side: str) -> str:
    return "rejected" if side == "chosen" else "chosen"


@dataclass
class Inputs:
    policy: Surrogate
    reference: Surrogate
    fields: dict[str, torch.Tensor]
    leaves: list[torch.Tensor]  # the policy's leaf tensors, for gradients


def build(raw: dict, needs: frozenset[str], paired: bool, *, swap: bool = False,
          grad: bool = False) -> Inputs:
    """Surrogates with what ``needs`` asks for. ``swap`` exchanges chosen and rejected (with
    their masks, extras and per-side fields) in both models; on unpaired rows it flips labels."""
    leaves: list[torch.Tensor] = []
    models = {}
    for m, model in enumerate(MODELS):
        wants_grad = grad and model == "policy"
        values: dict[str, Any] = {"terms": {}, "extras": {}}
        for s, side in enumerate(raw["u"]):
            target = _other(side) if swap and paired else side
            mask = torch.tensor(raw["mask"][side])
            units = torch.tensor(raw["units"][model, side], requires_grad=wants_grad)
            leaves += [units] if wants_grad else []
            values[target] = torch.where(mask, units, torch.zeros_like(units)).sum(-1)
            if "token_logps" in needs:
                values[f"{target}_units"], values[f"{target}_mask"] = units, mask
            if "vocab_logps" in needs:
                gen = _generator(raw, m, s, 0)
                logits = torch.randn(raw["b"], raw["u"][side], VOCAB, generator=gen) * raw["logit_scale"]
                logits.requires_grad_(wants_grad)
                leaves += [logits] if wants_grad else []
                values["extras"][f"vocab_logps_{target}"] = F.log_softmax(logits, dim=-1)
            if "hidden" in needs:
                gen = _generator(raw, m, s, 1)
                shape = (raw["b"], 1 if raw["flat_hidden"] else raw["u"][side], HIDDEN)
                hidden = torch.randn(*shape, generator=gen) * raw["hidden_scale"]
                values["extras"][f"hidden_{target}"] = hidden.expand(raw["b"], raw["u"][side], HIDDEN)
        for (model_name, key, version), term in raw["terms"].items():
            if model_name != model:
                continue
            side_bound = key.startswith(SIDES)
            if version == ("swapped" if swap and paired and side_bound else "given"):
                tensor = torch.tensor(term, requires_grad=wants_grad)
                leaves += [tensor] if wants_grad else []
                values["terms"][key] = tensor
        if not paired:
            label = torch.tensor(raw["label"])
            values["label"] = ~label if swap else label
        models[model] = Surrogate(**values)
    fields = {}
    for name, value in raw["fields"].items():
        side = next((s for s in SIDES if name.startswith(s + "_")), None)
        if swap and paired and side is not None:
            name = _other(side) + name[len(side):]
        fields[name] = torch.tensor(value)
    return Inputs(models["policy"], models["reference"], fields, leaves)


def run(name: str, params: dict, inputs: Inputs, state: torch.nn.Module | None) -> ObjectiveOutput:
    """Call the objective as the trainer does: reference only when its spec uses one."""
    spec = get_spec(name)
    reference = None if spec.reference == "none" else inputs.reference
    return spec.fn(inputs.policy, reference, Context(state=state, fields=inputs.fields), **params)


def fresh_state(name: str) -> torch.nn.Module | None:
    make_state = get_spec(name).make_state
    return None if make_state is None else make_state()


# -- (a) and (b) --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", CASES, ids=[case_id(c) for c in CASES])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_loss_and_policy_gradient_are_finite(name, params, data):
    """Finite inputs give a finite loss per row and a finite gradient for every policy input.

    A nan here usually comes from ``where`` over a branch that is infinite where it is not
    selected (its gradient is ``0 * inf``), or from an exp or division without a guard."""
    spec = get_spec(name)
    needs = spec.needs_for(params) | (spec.optional_needs if data.draw(st.booleans()) else frozenset())
    raw = data.draw(raw_batches(needs, spec.paired))
    torch.manual_seed(raw["seed"])  # lazily built state (SparsePO's heads) draws its weights
    state = fresh_state(name)
    inputs = build(raw, needs, spec.paired, grad=True)
    out = run(name, params, inputs, state)

    assert out.loss.shape == (raw["b"],)
    assert bool(torch.isfinite(out.loss).all()), f"loss {out.loss.tolist()}"
    assert bool(torch.isfinite(out.chosen_reward).all())
    assert out.rejected_reward is None or bool(torch.isfinite(out.rejected_reward).all())
    out.loss.sum().backward()
    grads = [leaf.grad for leaf in inputs.leaves if leaf.grad is not None]
    assert grads, "the loss does not depend on any policy input"
    for g in grads:
        assert bool(torch.isfinite(g).all()), f"non-finite policy gradient {g.tolist()}"
    for pname, p in (state.named_parameters() if state is not None else []):
        assert p.grad is None or bool(torch.isfinite(p.grad).all()), f"state {pname}: {p.grad}"


# -- (c): swapping chosen and rejected ---------------------------------------------------------

def logsig(x: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(x)


def smoothed(m: torch.Tensor, eps: float) -> torch.Tensor:
    """Conservative-DPO logistic loss on a logit ``m``; ``eps = 0`` is ``-log sigmoid(m)``."""
    return -(1 - eps) * logsig(m) - eps * logsig(-m)


@dataclass
class Call:
    """One call of an objective: its inputs, its parameters with defaults, its output."""

    inputs: Inputs
    p: dict[str, Any]
    out: ObjectiveOutput

    @property
    def sw(self) -> torch.Tensor:  # chosen reward, float64
        return self.out.chosen_reward.double()

    @property
    def sl(self) -> torch.Tensor:
        return self.out.rejected_reward.double()

    def term_reward(self, key: str) -> torch.Tensor:
        """``beta * (log pi - log ref)`` of the named term of this call's inputs."""
        pol, ref = self.inputs.policy.terms[key], self.inputs.reference.terms[key]
        return self.p["beta"] * (pol.detach().double() - ref.double())


def margin_law(f: Callable[[torch.Tensor, dict], torch.Tensor],
               margin: Callable[[Call], torch.Tensor] = lambda c: c.sw - c.sl):
    """A symmetric pairwise loss ``loss = f(M)`` of the reward margin ``M``: since swapping
    negates ``M`` (the rewards exchange), the swapped loss is ``f(-M)``, with ``M`` taken
    from the call as given."""
    def check(given: Call, swapped: Call) -> None:
        m = margin(given)
        torch.testing.assert_close(given.out.loss.double(), f(m, given.p), **TOL)
        torch.testing.assert_close(swapped.out.loss.double(), f(-m, given.p), **TOL)
    return check


def reward_law(f: Callable[[Call], torch.Tensor]):
    """A loss that is a function of each response's own reward (not only of their
    difference): ``loss = F(s_w, s_l, ...)``. The swapped loss is ``F`` at the exchanged
    rewards, i.e. ``F(s_l, s_w)`` with the swapped call's other inputs."""
    def check(given: Call, swapped: Call) -> None:
        torch.testing.assert_close(given.out.loss.double(), f(given), **TOL)
        torch.testing.assert_close(swapped.out.loss.double(), f(swapped), **TOL)
    return check


def logistic_law(reverse: bool = False, offset: Callable[[Call], torch.Tensor] | None = None,
                 scale: Callable[[Call], float] = lambda c: 1.0, atol: float = 1e-5):
    """``loss = offset + scale * (-log sigmoid(z))`` whose logit ``z`` (not exposed: it holds
    KL terms or sorted quantiles) flips sign under the swap. Since
    ``sigmoid(z) + sigmoid(-z) = 1``: ``exp(-A) + exp(-A') = 1`` with
    ``A = (loss - offset) / scale``. ``reverse``: row ``i`` of the swapped loss is row
    ``B - 1 - i`` of the loss as given (AOT's quantiles come out in reverse order)."""
    def reduced(call: Call) -> torch.Tensor:
        base = call.out.loss.double() - (offset(call) if offset else 0.0)
        return base / scale(call)

    def check(given: Call, swapped: Call) -> None:
        a, b = reduced(given), reduced(swapped)
        if reverse:
            b = b.flip(0)
        assert bool((a > -atol).all() and (b > -atol).all())  # -log sigmoid >= 0
        torch.testing.assert_close(torch.exp(-a) + torch.exp(-b), torch.ones_like(a), rtol=0, atol=atol)
    return check


def kto_law(given: Call, swapped: Call) -> None:
    """KTO (Ethayarajh et al. 2024): per row ``lambda_D * (1 - sigmoid(beta (r - z0)))`` when
    desirable, ``lambda_U * (1 - sigmoid(beta (z0 - r)))`` when undesirable. The value
    function is symmetric about the reference point ``z0``, so flipping a row's label turns
    ``1 - sigmoid(x)`` into ``1 - sigmoid(-x) = sigmoid(x)``: ``loss / lambda_y +
    loss' / lambda_y' = 1``. The rewards ``beta * r`` and ``z0`` do not depend on labels."""
    torch.testing.assert_close(swapped.out.chosen_reward, given.out.chosen_reward, rtol=0, atol=0)
    torch.testing.assert_close(swapped.out.metrics["kl"], given.out.metrics["kl"], rtol=0, atol=0)
    label = given.inputs.policy.label
    lam_given = torch.where(label, given.p["desirable_weight"], given.p["undesirable_weight"]).double()
    lam_swapped = torch.where(~label, given.p["desirable_weight"], given.p["undesirable_weight"]).double()
    total = given.out.loss.double() / lam_given + swapped.out.loss.double() / lam_swapped
    torch.testing.assert_close(total, torch.ones_like(total), **TOL)


def _aot_pair_margin(c: Call) -> torch.Tensor:
    # AOT on unpaired sets: quantile i pairs the i-th smallest chosen with the i-th smallest
    # rejected reward, M_(i) = sort(s_w)_(i) - sort(s_l)_(i); a swap negates it row by row
    return torch.sort(c.sw).values - torch.sort(c.sl).values


def _length(c: Call, side: str) -> torch.Tensor:
    return c.inputs.policy.__getattribute__(f"{side}_mask").sum(-1).double()


def _orpo_offset(c: Call) -> torch.Tensor:
    # ORPO: loss = NLL(y_w) + beta * (-log sigmoid(log odds ratio)); the per-token mean
    # NLL of the chosen response is -s_w / beta, and the log odds ratio flips sign on a swap
    return -c.sw / c.p["beta"]


#: what swapping chosen and rejected does to each objective's loss, as its paper implies;
#: objectives not listed get the generic property only (the rewards exchange places)
LAWS: dict[str, Callable[[Call, Call], None]] = {
    # DPO (Rafailov et al. 2023), and f-DPO: loss = -(1-eps) log s(M) - eps log s(-M) with
    # M = beta * (f'(u_w) - f'(u_l)) the reward margin
    # with max_margin the logit entering the loss is min(M, max_margin)
    "dpo": margin_law(lambda m, p: smoothed(m if p["max_margin"] is None else m.clamp(max=p["max_margin"]),
                                            p["label_smoothing"])),
    # robust DPO: [-(1-eps) log s(M) + eps log s(-M)] / (1 - 2 eps)
    "robust": margin_law(lambda m, p: (-(1 - p["label_smoothing"]) * logsig(m)
                                       + p["label_smoothing"] * logsig(-m)) / (1 - 2 * p["label_smoothing"])),
    # IPO: (h - 1/(2 beta))^2 with h = M / beta; the swap turns the target margin around
    "ipo": margin_law(lambda m, p: (m / p["beta"] - 1 / (2 * p["beta"])) ** 2),
    # SLiC / RSO hinge: max(0, 1 - M)
    "hinge": margin_law(lambda m, p: torch.relu(1 - m)),
    # EXO: KL((s(M), s(-M)) || (1-eps, eps))
    "exo_pair": margin_law(lambda m, p: torch.sigmoid(m) * (logsig(m) - math.log(1 - p["label_smoothing"]))
                           + torch.sigmoid(-m) * (logsig(-m) - math.log(p["label_smoothing"]))),
    # DiscoPOP: (1 - s(M/tau)) * (-log s(M)) + s(M/tau) * exp(-M)
    "discopop": margin_law(lambda m, p: torch.sigmoid(-m / p["tau"]) * F.softplus(-m)
                           + torch.exp(logsig(m / p["tau"]) - m)),
    # RLHF-V dense DPO and Mask-DPO: DPO's -log s(M) on weighted / masked log-ratio sums (the
    # per-side fields move with their side)
    "dense_dpo": margin_law(lambda m, p: -logsig(m)),
    "mask_dpo": margin_law(lambda m, p: -logsig(m)),
    # AOT on unpaired sets: logistic loss on sorted reward differences
    "aot_pair": margin_law(lambda m, p: smoothed(m, p["label_smoothing"]), margin=_aot_pair_margin),
    # AOT on pairs: -log s(beta * (sort(m_pi) - sort(m_ref))_(i)); a swap negates both margin
    # vectors, and sort(-x)_(i) = -sort(x)_(B-1-i), so quantile i becomes quantile B-1-i negated
    "aot": logistic_law(reverse=True),
    # TDPO1 / TDPO2: -log s(beta * (h - penalty)), the penalty alpha * (D(y_l) - D(y_w)) is
    # antisymmetric in the pair, so the whole logit flips sign
    "tdpo": logistic_law(),
    # SparsePO: -log s(beta * (u - d)), u and d both antisymmetric (masks follow their side)
    "sparsepo": logistic_law(),
    # ORPO: see _orpo_offset; beta scales the odds-ratio term
    "orpo": logistic_law(offset=_orpo_offset, scale=lambda c: c.p["beta"], atol=1e-3),
    # NCA (K = 2): -log s(s_w) - 1/2 log s(-s_w) - 1/2 log s(-s_l); not symmetric: it raises
    # the chosen likelihood in absolute terms and keeps both rewards near 0
    "nca_pair": reward_law(lambda c: -logsig(c.sw) - 0.5 * logsig(-c.sw) - 0.5 * logsig(-c.sl)),
    # SPPO, hard labels: (s_w/beta - 1/(2 beta))^2 + (s_l/beta + 1/(2 beta))^2
    "sppo_hard": reward_law(lambda c: (c.sw / c.p["beta"] - 1 / (2 * c.p["beta"])) ** 2
                            + (c.sl / c.p["beta"] + 1 / (2 * c.p["beta"])) ** 2),
    # APO-zero: 1 - s(s_w) + s(s_l); APO-down: s(s_w) + 1 - s(s_w - s_l)
    "apo_zero": reward_law(lambda c: 1 - torch.sigmoid(c.sw) + torch.sigmoid(c.sl)),
    "apo_down": reward_law(lambda c: torch.sigmoid(c.sw) + 1 - torch.sigmoid(c.sw - c.sl)),
    # BCO: -log s(s_w - delta) - log s(delta - s_l); delta, a mean over both sides, is the same
    # for the swapped batch (checked in the test)
    "bco_pair": reward_law(lambda c: -logsig(c.sw - c.out.metrics["reward_shift"].double())
                           - logsig(c.out.metrics["reward_shift"].double() - c.sl)),
    # SimPO: -log s(s_w - s_l - gamma); the target margin gamma makes it asymmetric
    "simpo": reward_law(lambda c: smoothed(c.sw - c.sl - c.p["gamma"], c.p["label_smoothing"])),
    # CPO: -log s(s_w - s_l) + nll_weight * (-(s_w / beta) / |y_w|): the NLL follows the chosen
    "cpo": reward_law(lambda c: smoothed(c.sw - c.sl, c.p["label_smoothing"])
                      - c.p["nll_weight"] * c.sw / c.p["beta"] / _length(c, "chosen")),
    # SFT: the chosen response's mean NLL, reported reward = mean log-prob: loss = -s_w, so
    # after a swap it trains on the other response
    "sft": reward_law(lambda c: -c.sw),
    # mDPO: -log s(s_w - s_l) - log s(s_w - s_w|corrupted) - log s(s_w - delta); only the first
    # term is a pair margin, the others see the chosen response alone (under the swap the
    # corrupted-image term is the new chosen response's)
    "mdpo": reward_law(lambda c: -logsig(c.sw - c.sl) - logsig(c.sw - c.term_reward("chosen|condition=corrupted"))
                       - logsig(c.sw - c.p["delta"])),
    # Re-Align's rDPO: -log s(s_w - s_l) - log s(s_w - s_w|retrieved)
    "rdpo": reward_law(lambda c: -logsig(c.sw - c.sl) - logsig(c.sw - c.term_reward("chosen|condition=retrieved"))),
    "kto": kto_law,
}


def test_every_law_names_a_registered_objective():
    assert set(LAWS) <= set(names())


def defaults(name: str) -> dict[str, Any]:
    signature = inspect.signature(get_spec(name).fn)
    return {p.name: p.default for p in signature.parameters.values()
            if p.default is not inspect.Parameter.empty and p.name not in ("reference", "ctx")}


@pytest.mark.parametrize("name,params", CASES, ids=[case_id(c) for c in CASES])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_swapping_chosen_and_rejected(name, params, data):
    """Rewards exchange places (the margin flips sign), then the objective's own law."""
    spec = get_spec(name)
    needs = spec.needs_for(params) | (spec.optional_needs if data.draw(st.booleans()) else frozenset())
    raw = data.draw(raw_batches(needs, spec.paired))
    torch.manual_seed(raw["seed"])
    state = fresh_state(name)
    if state is not None:
        # one step first: lazy layers get their weights, running statistics a history; both
        # calls then start from copies of that state
        run(name, params, build(raw, needs, spec.paired), state)
    calls = []
    for swap in (False, True):
        inputs = build(raw, needs, spec.paired, swap=swap)
        with torch.no_grad():
            out = run(name, params, inputs, copy.deepcopy(state))
        calls.append(Call(inputs, {**defaults(name), **params}, out))
    given_call, swapped = calls

    if spec.paired:
        # implicit rewards are per response (beta times a log-ratio, or a policy-only
        # score): a swap exchanges them, which negates the margin and its logged mean
        torch.testing.assert_close(swapped.out.chosen_reward, given_call.out.rejected_reward, **TOL)
        torch.testing.assert_close(swapped.out.rejected_reward, given_call.out.chosen_reward, **TOL)
        torch.testing.assert_close(swapped.out.metrics["rewards/margins"],
                                   -given_call.out.metrics["rewards/margins"], **TOL)
        # the spread of the margins mirrors: the smallest becomes minus the largest
        for low, high in (("min", "max"), ("p50", "p50"), ("max", "min")):
            torch.testing.assert_close(swapped.out.metrics[f"rewards/margins_{low}"],
                                       -given_call.out.metrics[f"rewards/margins_{high}"], **TOL)
    if name == "bco_pair":
        torch.testing.assert_close(swapped.out.metrics["reward_shift"],
                                   given_call.out.metrics["reward_shift"], **TOL)
    law = LAWS.get(name)
    if law is not None:
        law(given_call, swapped)
