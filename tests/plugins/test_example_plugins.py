"""The two example plugins of docs/adding_a_modality.md built on the shared libraries, each an
outside package installed as pip would install it (its entry point, its source on sys.path):

* ``signal`` (tests/plugins/mmalign_signal_plugin): Diffusion-DPO (Wallace et al. 2023,
  arXiv:2311.12908) on diffusers' ``UNet1DModel``, on :mod:`mmalign.modalities.denoising`;
* ``gpt2`` (tests/plugins/mmalign_gpt2_plugin): DPO (Rafailov et al. 2023) on transformers'
  ``GPT2LMHeadModel``, on :mod:`mmalign.modalities.tokens`.

Each passes the conformance kit, trains through the trainer (DPO, IPO, a precomputed
reference; LoRA on the DPO run), and computes its surrogate as the plain formula says.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import mmalign.objectives as objectives
from mmalign import config
from mmalign.modality import ModelSpec, row_generator
from mmalign.registry import modalities
from mmalign.testing import check_modality
from mmalign.train.run import train

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

HERE = Path(__file__).parent
PACKAGES = {"signal": "mmalign_signal_plugin", "gpt2": "mmalign_gpt2_plugin"}
KIT = ["protocol", "records", "shapes", "units", "gradient", "step0", "draw", "export", "export_lora"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread is as fast, and sums are reproducible."""


def install(install_dist, name: str):
    """The dist-info an editable install writes, from the plugin's own pyproject.toml; the class."""
    folder = HERE / PACKAGES[name]
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    install_dist(project["name"], project["entry-points"], source=folder)
    return modalities.get(name)


@pytest.mark.parametrize("name", list(PACKAGES))
def test_plugin_is_found_through_its_entry_point_and_passes_the_kit(install_dist, name):
    cls = install(install_dist, name)
    assert cls.__module__ == PACKAGES[name]
    assert modalities.origin(name).startswith(f"entry point '{name} = {PACKAGES[name]}:")
    results = check_modality(name)
    assert [r.name for r in results] == KIT
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
    assert "skipped" not in results[-1].detail  # both name LoRA targets, and export them


# -- training through the trainer -----------------------------------------------------------------

#: per plugin: training settings, the IPO parameters (the signal plugin has no token lengths), and
#: the LoRA targets of the LoRA run. The signal plugin's default targets, the Linear layers of
#: SelfAttention1d, sit at the tiny UNet's two coarsest resolutions (4 and 8 samples) and barely
#: move its output in a few steps; its ResConvBlock convolutions (peft's Conv1d LoRA) do.
SETTINGS = {
    "signal": ({"lr": 2e-3, "max_steps": 8}, {"beta": 0.5, "normalize": False},
               ["query", "key", "value", "proj_attn", "conv_1", "conv_2"]),
    "gpt2": ({"lr": 2e-2, "max_steps": 6}, {"beta": 0.5}, None),
}
CASES = {  # objective, extra recipe sections
    "dpo_lora": ({"name": "dpo", "params": {"beta": 0.5}},
                 {"model": {"lora": {"r": 4, "alpha": 8}}, "train": {"lr": 1e-2}}),
    "ipo": (None, {"reference": {"strategy": "copy"}}),
    "precomputed": ({"name": "dpo", "params": {"beta": 0.5}}, {"reference": {"strategy": "precomputed"}}),
}


def recipe_for(name: str, case: str, folder: Path) -> config.Recipe:
    example = modalities.get(name).example(str(folder))
    train_args, ipo_params, lora_targets = SETTINGS[name]
    objective, extra = CASES[case]
    if "model" in extra and lora_targets:
        extra = config.merge(extra, {"model": {"lora": {"target_modules": lora_targets}}})
    raw = {
        "model": {"modality": name, "builder": example["spec"].builder, "options": example["options"]},
        "data": {"train": example["data"]},
        "objective": objective or {"name": "ipo", "params": ipo_params},
        "train": {"seed": 0, "batch_size": 6, "max_grad_norm": 1.0, **train_args},
        "logging": {"output_dir": str(folder / "run"), "tensorboard": False, "progress": False},
    }
    return config.from_dict(config.merge(raw, extra), source=f"<{name}-{case}>")


def start_value(objective: dict) -> float:
    """The loss with policy == reference (log-ratios 0): DPO ``log 2``, IPO ``(1 / (2 beta))^2``."""
    return math.log(2) if objective["name"] == "dpo" else (1 / (2 * objective["params"]["beta"])) ** 2


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(PACKAGES))
def test_training_moves_the_loss_and_grows_the_margin(install_dist, tmp_path, name, case):
    install(install_dist, name)
    recipe = recipe_for(name, case, tmp_path)
    session = train(recipe)
    term = recipe.objective[0]
    objective = {"name": term.name, "params": term.params}
    assert session.step == recipe.train.max_steps and session.strategy == CASES[case][1].get(
        "reference", {}).get("strategy", "adapters_off")
    assert session.history[0]["loss"] == pytest.approx(start_value(objective), abs=1e-5)
    # the trained policy against the model it started from, on the training rows, with the
    # draws of several epochs (one for gpt2: its draw is empty)
    modality, base = session.modality, session.modality.load_policy(ModelSpec(builder=recipe.model.builder))
    batch = modality.collate(session.train_records)
    margins, losses = [], []
    with torch.no_grad():
        for epoch in range(4 if name == "signal" else 1):
            batch.epoch = epoch
            draw = modality.draw(batch, 0, session.policy)
            pol = modality.surrogate(session.policy, batch, draw, session.needs)
            ref = modality.surrogate(base, batch, draw, session.needs)
            margins.append(((pol.chosen - ref.chosen) - (pol.rejected - ref.rejected)).mean())
            losses.append(objectives.get(term.name)(pol, ref, **term.params).loss.mean())
    assert float(torch.stack(margins).mean()) > 0, margins
    assert float(torch.stack(losses).mean()) < start_value(objective), losses
    assert (session.run_dir / "export" / "README.md").is_file()


# -- the surrogate is the plain formula ----------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True])
def test_gpt2_surrogate_is_the_summed_log_softmax_of_the_response(install_dist, tmp_path, packed):
    """log pi(y | x) = sum over the response tokens and the EOS closing it of log_softmax of the
    logits one position earlier, from one unpadded sequence [prompt | response | EOS] per side."""
    modality = install(install_dist, "gpt2")(packed=packed)
    model = modality.load_policy(ModelSpec(builder="tiny_gpt2", builder_args={"n_layer": 2}))
    records = modality.load_records(modality.example(str(tmp_path))["data"])[:3]
    batch = modality.collate(records)
    sur = modality.surrogate(model, batch, modality.draw(batch, 0, model), frozenset({"token_logps"}))
    tok, eos = modality.tokenizer, modality.tokenizer.eos_token_id
    for b, record in enumerate(records):
        prompt = tok(record["prompt"]).input_ids
        assert eos not in prompt  # GPT-2 puts no BOS before a text
        for side in ("chosen", "rejected"):
            response = tok(record[side]).input_ids + [eos]  # the EOS ends the response and is scored
            ids = torch.tensor([prompt + response])
            logps = F.log_softmax(model(ids).logits[0].float(), -1)
            by_hand = sum(logps[len(prompt) - 1 + u, y] for u, y in enumerate(response))
            assert_close(getattr(sur, side)[b], by_hand, atol=1e-5, rtol=1e-5)
            assert int(getattr(sur, f"{side}_mask")[b].sum()) == len(response)


def test_signal_surrogate_is_the_epsilon_mse_of_the_drawn_timestep_and_noise(install_dist, tmp_path):
    """s = -0.5 * mean((unet(x_t, t) - e)^2), x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e, with DDPM's
    a_t = prod_{s <= t} (1 - beta_s), beta linear from 1e-4 to 0.02; t and e from each row's own
    generator, shared by the pair."""
    cls = install(install_dist, "signal")
    modality = cls(length=32)
    model = modality.load_policy(ModelSpec(builder="tiny_unet1d"))
    records = modality.load_records(modality.example(str(tmp_path))["data"])[:3]
    batch = modality.collate(records)
    draw = modality.draw(batch, 7, model)
    sur = modality.surrogate(model, batch, draw, frozenset())
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    for b, record in enumerate(records):
        gen = row_generator(7, record["sample_id"], 0, "signal")
        t, noise = torch.randint(0, 1000, (), generator=gen), torch.randn((1, 32), generator=gen)
        assert int(draw["timesteps"][b]) == int(t) and torch.equal(draw["noise"][b], noise)
        for side in ("chosen", "rejected"):
            x0 = torch.tensor([record[side]], dtype=torch.float64)
            x_t = (alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * noise).float()
            with torch.no_grad():
                prediction = model(x_t[None], t[None]).sample[0]
            by_hand = -0.5 * ((prediction - noise) ** 2).mean()
            assert_close(getattr(sur, side)[b].detach(), by_hand, atol=1e-5, rtol=1e-5)


def test_gpt2_lora_on_conv1d_exports_an_adapter_peft_reloads(install_dist, tmp_path):
    """GPT-2's c_attn / c_proj are transformers' Conv1D (weight [in, out]): peft turns
    fan_in_fan_out on for them, the exported adapter_config.json says so, and
    ``PeftModel.from_pretrained`` on the base model gives the trained model's logits."""
    from peft import PeftModel

    from mmalign.train import adapters

    modality = install(install_dist, "gpt2")(max_length=64)
    spec = ModelSpec(builder="tiny_gpt2")
    policy = adapters.add_lora(modality.load_policy(spec), r=4, alpha=8, dropout=0.0,
                               target_modules=list(modality.lora_target_modules))
    assert policy.peft_config["default"].fan_in_fan_out
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    modality.export(policy, str(tmp_path / "export"), "# card")
    assert json.loads((tmp_path / "export" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    reloaded = PeftModel.from_pretrained(modality.load_policy(spec), str(tmp_path / "export")).eval()
    ids = torch.tensor([modality.tokenizer("Q: tea?\nA: Yes.").input_ids])
    with torch.no_grad():
        assert_close(reloaded(ids).logits, policy(ids).logits, atol=1e-5, rtol=0)
        assert (policy(ids).logits - modality.load_policy(spec)(ids).logits).abs().max() > 1e-2
