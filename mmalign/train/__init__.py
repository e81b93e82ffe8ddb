"""The trainer: one loop for every modality and objective (``run``), with its reference
strategies, precompute, checkpoints, adapters and logs in files named for them."""
