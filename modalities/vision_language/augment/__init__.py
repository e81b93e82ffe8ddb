"""Rejected responses built from the model itself, as new preference records.

Each method is a plain function ``fn(modality, model, records, **options) -> list[dict]``
taking the modality (with its processor loaded), the model that answers and validated records
(``modality.load_records``), and returning new records of the same form, ready for
``modality.collate`` and the trainer:

* :func:`mia_dpo` (Liu et al. 2024, arXiv:2410.17637): multi-image layouts of a row's image
  with distractors; answers whose attention share on the target image is low are rejected.
* :func:`povid` (Zhou et al. 2024, arXiv:2402.11411): the chosen answer teacher-forced under a
  diffusion-noised image; the model's own predictions form the rejected answer.
* :func:`bdhs` (Amirloo et al. 2024, arXiv:2407.02477): image tokens masked in embedding space,
  the answer continued from a prefix of the chosen one, kept when it drifts from it.
* :func:`temple` (Li et al. 2025, arXiv:2503.16929): clip questions answered on the clean clip
  (chosen) and on temporally perturbed copies (rejected), prompted with the clean clip; its
  module also holds the clip-question reader, the large-to-small perturbation schedule
  (``curriculum``) and a ``video_qa`` writer.

Every new record carries ``augment`` (method, options used and what was measured), and a
``sample_id`` derived from its source record's, so draws and caches stay stable.
"""
from mmalign.modalities.vision_language.augment.bdhs import bdhs
from mmalign.modalities.vision_language.augment.mia_dpo import mia_dpo
from mmalign.modalities.vision_language.augment.povid import povid
from mmalign.modalities.vision_language.augment.temple import temple

__all__ = ["bdhs", "mia_dpo", "povid", "temple"]
