"""Response-token log-probs from hidden states, and the extras token-level objectives read.

For response token ``u`` predicted at position ``t_u`` (:mod:`.layouts`)::

    logp_u = log softmax(lm_head(h_{t_u}))[y_u]

summed over the response tokens (EOS included, BOS never: :mod:`.responses`) this is
``log pi(y | x)`` of DPO (Rafailov et al. 2023, eq. 7). On request:

* ``vocab_logps`` ``[N, U, V]``: the whole next-token distribution at each response token,
  zero past each response; TDPO's sequential KL (Zeng et al. 2024, "Token-level Direct
  Preference Optimization", arXiv:2404.11999) and RRPO's token-wise KL (arXiv:2504.12083) read it;
* ``hidden`` ``[N, U, H]``: the last hidden state that predicts each response token
  (``h_{x, y<u}``, what the LM head reads); CHES (Razin et al. 2024, arXiv:2410.08847) reads it. Entries past a response hold the state of the padding position the layout
  points them at: mask them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.modalities.tokens.forward import unwrap
from mmalign.modalities.tokens.layouts import Targets


@dataclass
class TokenScores:
    logps: Tensor                       # [N, U] log-prob of each response token, 0 where masked
    mask: Tensor                        # [N, U] bool
    vocab_logps: Tensor | None = None   # [N, U, V], 0 where masked
    hidden: Tensor | None = None        # [N, U, H] state that predicts each token

    def rows(self, rows: slice) -> "TokenScores":
        """The rows ``rows`` of every tensor."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)
                                if getattr(self, f.name) is not None})


def token_scores(model: nn.Module, hidden: Tensor, targets: Targets, *, vocab: bool = False,
                 keep_hidden: bool = False) -> TokenScores:
    """Log-probs of the response tokens: ``log_softmax(lm_head(h_{t_u}))[y_u]``.

    The head runs only at the positions that predict a response token (not over the whole
    sequence), in float32: half-precision logits lose the small differences DPO looks at.
    """
    head = unwrap(model).get_output_embeddings()
    positions = targets.positions.to(hidden.device)
    states = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logps = F.log_softmax(head(states).float(), dim=-1)
    mask = targets.mask.to(hidden.device)
    token = logps.gather(-1, targets.targets.to(hidden.device).unsqueeze(-1)).squeeze(-1)
    return TokenScores(logps=token * mask, mask=mask, vocab_logps=logps * mask.unsqueeze(-1) if vocab else None,
                       hidden=states if keep_hidden else None)
