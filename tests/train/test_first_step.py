"""A plugin's mistakes are named at load or at the first step, not found after a lost run:
the contract checked before any model loads, missing or shared sample ids, a surrogate
without gradient, dropout or nondeterminism that makes policy and reference differ at step 0.
Dropout is off by default (model.disable_dropout), as in TRL."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmalign import config, registry
from mmalign.errors import ConfigError
from mmalign.surrogate import Surrogate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "mmalign_toy_plugin"))
from mmalign_toy_plugin import GaussianMean, ToyModality  # noqa: E402




@pytest.fixture
def vectors(tmp_path):
    path = tmp_path / "vectors.jsonl"
    rows = [{"chosen": [1.0, float(i)], "rejected": [0.0, -float(i)]} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run(name: str, cls, vectors: str, tmp_path, **sections):
    from mmalign.train.run import train

    registry.modalities.register(name, cls)
    raw = {"model": {"modality": name, "builder": "gaussian_mean"},
           "data": {"train": vectors}, "objective": {"name": "dpo", "params": {"beta": 0.5}},
           "reference": {"strategy": "copy"},
           "train": {"seed": 0, "batch_size": 4, "lr": 0.1, "max_steps": 2},
           "logging": {"output_dir": str(tmp_path / name), "tensorboard": False, "progress": False}}
    return train(config.from_dict(config.merge(raw, sections), source=f"<{name}>"))


def test_a_sound_plugin_trains(vectors, tmp_path, restore_registries):
    s = run("toy_ok", ToyModality, vectors, tmp_path)
    assert s.step == 2


def test_a_missing_member_is_named_before_any_model_loads(vectors, tmp_path, restore_registries):
    class NoExport(ToyModality):
        export = None  # type: ignore[assignment]

        def load_policy(self, spec):  # never reached: the contract is checked first
            raise AssertionError("the model loaded before the contract was checked")

    class BadDraw(ToyModality):
        def draw(self, batch):  # the core passes (batch, seed, model)
            raise AssertionError

    with pytest.raises(ConfigError, match=r"modality 'toy_no_export' .* contract.*\n  - no method 'export\(model, out_dir, card\)'"):
        run("toy_no_export", NoExport, vectors, tmp_path)
    with pytest.raises(ConfigError, match=r"'draw' cannot be called as draw\(batch, seed, model\)"):
        run("toy_bad_draw", BadDraw, vectors, tmp_path)


def test_missing_or_shared_sample_ids_are_named(vectors, tmp_path, restore_registries):
    class NoIds(ToyModality):
        def load_records(self, path, schema=None):
            return [{k: v for k, v in r.items() if k != "sample_id"} for r in super().load_records(path)]

    class SameIds(ToyModality):
        def load_records(self, path, schema=None):
            return [{**r, "sample_id": "row"} for r in super().load_records(path)]

    with pytest.raises(ConfigError, match="modality 'toy_no_ids': record 0 of data.train has no sample_id"):
        run("toy_no_ids", NoIds, vectors, tmp_path)
    with pytest.raises(ConfigError, match="records 0 and 1 of data.train share sample_id 'row'"):
        run("toy_same_ids", SameIds, vectors, tmp_path)


def test_a_detached_surrogate_is_named(vectors, tmp_path, restore_registries):
    class Detached(ToyModality):
        def surrogate(self, model, batch, draw, needs):
            return super().surrogate(model, batch, draw, needs).detach()

    with pytest.raises(ConfigError, match="modality 'toy_detached': the policy's surrogate carries no gradient"):
        run("toy_detached", Detached, vectors, tmp_path)


class NoisyMean(GaussianMean):
    """The toy Gaussian with a dropout layer on its input."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return super().forward(self.drop(x))


class WithDropout(ToyModality):
    def load_policy(self, spec):
        return NoisyMean(self.dim)


def test_dropout_is_off_by_default_and_named_when_kept(vectors, tmp_path, restore_registries):
    s = run("toy_dropout_off", WithDropout, vectors, tmp_path)
    assert s.policy.drop.p == 0.0 and s.reference.model.drop.p == 0.0
    assert s.history[0]["rewards/margins"] == 0.0  # policy equals reference before the first update
    with pytest.raises(ConfigError, match=r"at step 0 the policy's chosen surrogate differs from the reference's "
                                          r"\(reference.strategy copy"):
        run("toy_dropout_on", WithDropout, vectors, tmp_path, model={"disable_dropout": False})
    kept = run("toy_dropout_unchecked", WithDropout, vectors, tmp_path, model={"disable_dropout": False},
               train={"first_step_checks": False})
    assert kept.policy.drop.p == 0.5


def test_a_surrogate_that_is_not_deterministic_is_named(vectors, tmp_path, restore_registries):
    class Jitter(ToyModality):
        def surrogate(self, model, batch, draw, needs):
            out = super().surrogate(model, batch, draw, needs)
            return Surrogate(chosen=out.chosen + torch.rand(len(batch)), rejected=out.rejected)

    with pytest.raises(ConfigError, match="not deterministic for a given draw"):
        run("toy_jitter", Jitter, vectors, tmp_path)
