"""The ``text`` modality plugin: causal language models scored by their response-token
log-probs, a thin plugin on :mod:`mmalign.modalities.tokens`.

* :mod:`.modality` -- :class:`TextModality` and its options;
* :mod:`.encoding` -- records to prompt and response token ids (chat template or plain text);
* :mod:`.records` -- data files to records through the ``text:*`` dataset schemas;
* :mod:`.loading` -- the model and tokenizer from a local folder or a ``models.text`` builder.
"""
from mmalign.modalities.text.modality import TextModality, TextOptions
from mmalign.modalities.tokens.scoring import kl_mismatched

__all__ = ["TextModality", "TextOptions", "kl_mismatched"]
