"""Shared library of the token-family plugins (text, vision-language, audio-language, audio
tokens): what every plugin that scores token sequences needs. A library, not a registered
modality; the core never imports it.

One file per job:

* :mod:`.responses` -- which tokens a response is (the BOS / EOS rule below);
* :mod:`.truncation` -- fitting prompt and responses into ``max_length`` without cutting the prompt;
* :mod:`.layouts` -- the naive ``[prompt | response]`` rows and the packed
  ``[prompt | chosen | rejected]`` row with its block mask;
* :mod:`.forward` -- running a causal LM (or a LLaVA-style one) over a layout;
* :mod:`.logps` -- response-token log-probs, and the ``vocab_logps`` / ``hidden`` extras;
* :mod:`.scoring` -- a batch of pairs or of single responses as a :class:`~mmalign.surrogate.Surrogate`;
* :mod:`.fields` -- per-row and per-token batch fields (changed tokens, sentence masks);
* :mod:`.records` -- a data file to records through a dataset schema, row by row;
* :mod:`.options` -- the pydantic options every token plugin shares;
* :mod:`.sampling` -- seeded generation for ``sample``;
* :mod:`.export` -- transformers / peft export.

**The BOS / EOS rule.** A response is scored token by token,
``log pi(y | x) = sum_u log softmax(f(x, y_<u))[y_u]`` (Rafailov et al. 2023, eq. 7), over its
response tokens. The EOS that ends a response is a response token and is scored, as TRL
does: stopping is part of what the policy chose. The BOS is never a response token: it opens
the prompt (where the tokenizer or chat template puts it) and nothing predicts it. A response
cut by ``keep_start`` truncation does not end inside the window, so it has no EOS to score.
"""
