"""Toy worlds where alignment visibly works on a CPU, with nothing to download; installed as
``mmalign.toy`` and found by ``mmalign demo`` through the ``mmalign.demos`` entry points.

* :mod:`~mmalign.toy.shapes`: the shapes world (circles, squares, triangles in four
  colours), deterministic by seed, with held-out seed ranges;
* :mod:`~mmalign.toy.detect`: detectors that read colour, shape and size from pixels;
* :mod:`~mmalign.toy.pretrain_diffusion`, :mod:`~mmalign.toy.pretrain_flow`,
  :mod:`~mmalign.toy.pretrain_llava`:
  the scripts that made the base checkpoints in ``assets/toy/`` (reached through
  :mod:`mmalign.assets`; :mod:`~mmalign.toy.checkpoints` checks their recorded hashes);
* :mod:`~mmalign.toy.rewards`: the program rewards, registered as reward scorers;
* :mod:`~mmalign.toy.task`: the sequence every demo follows (sample, score, pair, train,
  measure before and after); :mod:`~mmalign.toy.task_diffusion`, :mod:`~mmalign.toy.task_flow`
  and :mod:`~mmalign.toy.task_lvlm` supply its parts (the two text-to-image ones share
  :mod:`~mmalign.toy.colour_task`);
* :mod:`~mmalign.toy.tasks`: the demos (``TASKS``), as ``mmalign demo`` runs them.
"""
