"""Supervised fine-tuning on the chosen response, as an objective of its own or as the
likelihood term of a weighted sum (RPO = dpo + alpha * sft, MPO, TangoFlux's CRPO)."""
from __future__ import annotations

from mmalign.errors import DataError
from mmalign.objectives.common import mean_logps, pair_output
from mmalign.objectives.spec import Context, objective
from mmalign.surrogate import ObjectiveOutput, Surrogate


@objective("sft", optional_needs=("token_logps",), reference="none",
           citation="Ouyang et al. 2022, Training language models to follow instructions with human "
                    "feedback (arXiv:2203.02155); as a DPO regulariser: Pang et al. 2024, Iterative "
                    "Reasoning Preference Optimization (arXiv:2404.19733); on flow matching: Hung et "
                    "al. 2024, TangoFlux (arXiv:2412.21037)")
def sft(policy: Surrogate, reference: Surrogate | None = None, ctx: Context | None = None) -> ObjectiveOutput:
    """Negative log-likelihood (or its surrogate) of the chosen response: supervised
    fine-tuning (Ouyang et al. 2022, arXiv:2203.02155), which RPO adds to DPO (Pang et al.
    2024, arXiv:2404.19733) and CRPO adds to flow-matching DPO (Hung et al. 2024,
    arXiv:2412.21037).

    With token units (the surrogate has ``chosen_mask``): the per-token mean,
    ``loss = -log pi(y_w) / |y_w| = -sum_t log pi(y_w,t | x, y_w,<t) / |y_w|``, TRL's
    convention, so that long responses do not outweigh short ones. Rewards are the per-token
    mean log-probabilities (of the rejected response too, when rows are paired and it has a
    mask), so the accuracy says how often the policy prefers the chosen response per token.

    Without units (a diffusion model's per-sample surrogate
    ``s = -0.5 * mean((prediction - target)^2)``): ``loss = -s_w``, half the chosen sample's
    denoising / flow-matching mean squared error, the pretraining loss on the chosen sample.
    Rewards are ``s_w`` and ``s_l``.

    Needs: ``token_logps`` is an *optional* need. It is not required, so a modality without
    token units (diffusion) passes the config-time check for ``sft`` and for sums such as
    ``dpo + 2 * sft``; a modality that supports it is asked for it
    (:func:`mmalign.objectives.spec.requested_needs`) and then gets the per-token mean.
    """
    if policy.chosen.dim() != 1:
        raise DataError(f"sft: policy.chosen has shape {tuple(policy.chosen.shape)}, expected [B]")
    if policy.chosen_mask is None:
        rejected = policy.rejected
        if rejected is not None and tuple(rejected.shape) != tuple(policy.chosen.shape):
            raise DataError(f"sft: policy.rejected has shape {tuple(rejected.shape)}, expected "
                            f"{tuple(policy.chosen.shape)} like policy.chosen")
        return pair_output(policy, -policy.chosen, policy.chosen, rejected)
    chosen_mean = mean_logps(policy, "chosen", "sft")
    rejected_mean = None
    if policy.rejected is not None and policy.rejected_mask is not None:
        rejected_mean = mean_logps(policy, "rejected", "sft")
    return pair_output(policy, -chosen_mean, chosen_mean, rejected_mean)
