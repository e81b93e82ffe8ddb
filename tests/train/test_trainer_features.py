"""Named-adapter references, TR-DPO sync, objective state, gradient checkpointing, logs."""
from __future__ import annotations

import json

import pytest
import torch

from mmalign.train import adapters, checkpoint
from mmalign.train.reference import soft_update
from mmalign.train.run import build, forward, train


def surrogates(session, records, model):
    batch = session.modality.collate(records).to(next(model.parameters()).device)
    draw = session.modality.draw(batch, 0, model)
    with torch.no_grad():
        return session.modality.surrogate(model, batch, draw, session.needs)


def test_named_adapter_reference_is_the_adapter(make_recipe):
    """An SFT-like adapter saved by one run becomes the reference of the next."""
    first = train(make_recipe("sft", train={"max_steps": 4}))
    adapter_dir = first.run_dir / "export"
    assert (adapter_dir / "adapter_config.json").is_file()
    second = build(make_recipe("dpo", reference={"strategy": "adapter",
                                                 "adapter_path": str(adapter_dir)}))
    records = second.train_records[:4]
    expected = surrogates(first, records, first.policy)
    batch = second.modality.collate(records)
    draw = second.modality.draw(batch, 0, second.policy)
    got = second.reference.surrogate(second.modality, second.scorer, batch, draw, second.needs)
    torch.testing.assert_close(got.chosen.cpu(), expected.chosen.cpu(), atol=1e-6, rtol=0)
    # the reference adapter is frozen; the policy's own adapter still trains
    trainable = [n for n, p in second.policy.named_parameters() if p.requires_grad]
    assert trainable and not any(".reference." in n for n in trainable)
    fresh = surrogates(second, records, second.policy)
    assert not torch.allclose(fresh.chosen.cpu(), expected.chosen.cpu())


def test_tr_dpo_sync_with_alpha_one_makes_reference_the_policy(make_recipe):
    session = train(make_recipe(model={"lora": None}, train={"max_steps": 3},
                                reference={"strategy": "copy", "sync": {"alpha": 1.0, "every": 1}}))
    for (name, p), (_, r) in zip(session.policy.named_parameters(),
                                 session.reference.model.named_parameters()):
        assert torch.equal(p, r), name


def test_soft_update_mixes_by_alpha():
    ref, pol = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = ref.weight.detach().clone()
    soft_update(ref, pol, alpha=0.25)
    torch.testing.assert_close(ref.weight, 0.75 * before + 0.25 * pol.weight.detach())


def test_objective_state_is_trained_state_and_checkpointed(make_recipe):
    session = train(make_recipe(objective={"name": "bco_pair", "params": {"beta": 0.5}},
                                train={"max_steps": 3, "save_every": 3}))
    assert float(session.objective_state["bco_pair"].count) == 3  # one update per step
    saved = checkpoint.read_state(session.run_dir / "checkpoints/step-0000003")
    state = saved["objective_state"]
    assert torch.equal(state["bco_pair.mean"], session.objective_state["bco_pair"].mean)


def test_gradient_checkpointing_still_gives_lora_gradients(make_recipe):
    session = build(make_recipe(train={"gradient_checkpointing": True}))
    model = session.policy
    model.train()
    assert model.is_gradient_checkpointing
    loss, _ = forward(session, session.scorer, session.train_records[:4], 0, 0, training=True)
    # B starts at zero, so the loss at step 0 does not depend on A; B's gradient must flow
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for g in grads.values())


def test_logs_jsonl_tensorboard_plot_and_card(make_recipe):
    from mmalign.plot import plot

    session = train(make_recipe(logging={"tensorboard": True, "every": 1},
                                train={"max_steps": 4}, eval={"every": 2}))
    rows = [json.loads(x) for x in (session.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [r["step"] for r in eval_rows] == [2, 4]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                "drift/chosen", "lr", "grad_norm"):
        assert key in train_rows[0], key
    assert list(session.run_dir.rglob("events.out.tfevents.*"))
    assert (session.run_dir / "config.yaml").is_file()
    card = (session.run_dir / "export" / "README.md").read_text()
    assert "objective: 1.0 x dpo" in card and "steps: 4" in card
    png = plot(session.run_dir)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapters_disabled_restores_grad_flags(make_recipe):
    session = build(make_recipe())
    flags = {n: p.requires_grad for n, p in session.policy.named_parameters()}
    with adapters.adapters_disabled(session.policy):
        pass
    assert flags == {n: p.requires_grad for n, p in session.policy.named_parameters()}


def test_runs_of_different_precisions_share_a_process(make_recipe):
    """accelerate keeps one precision per process; the trainer lets each run ask for its own
    (found on a GPU machine, where a bf16 run made every later run in the process fail)."""
    first = train(make_recipe("bf16", train={"max_steps": 1, "mixed_precision": "bf16", "cpu": True}))
    assert first.accelerator.mixed_precision == "bf16"
    second = train(make_recipe("fp32", train={"max_steps": 1}))
    assert second.accelerator.mixed_precision == "no" and second.step == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16/fp16 autocast, FSDP, ZeRO and "
                    "8-bit Adam need CUDA; CPU stand-ins: test_two_process_ddp_matches_one_process "
                    "and test_each_strategy_lowers_loss_and_raises_accuracy")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(make_recipe, precision):
    session = train(make_recipe(train={"max_steps": 4, "mixed_precision": precision}))
    assert session.history[-1]["loss"] < session.history[0]["loss"]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP and DeepSpeed ZeRO-2/3 need two "
                    "CUDA devices (and deepspeed for ZeRO); CPU stand-in: "
                    "test_two_process_ddp_matches_one_process")
@pytest.mark.parametrize("launch", ["fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_sharded_launch_on_gpus(make_recipe, tmp_path, launch):
    import subprocess
    import sys

    from pathlib import Path

    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(make_recipe(train={"max_steps": 4}).dump()))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(Path(__file__).resolve().parents[2] / "configs/accelerate" / launch), "-m", "mmalign.cli", "train", str(path)]
    assert subprocess.run(cmd, timeout=900).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="8-bit Adam (bitsandbytes) needs CUDA; "
                    "CPU stand-in: test_each_strategy_lowers_loss_and_raises_accuracy (AdamW)")
def test_adamw_8bit_on_gpu(make_recipe):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    session = train(make_recipe(train={"max_steps": 4, "optimizer": "adamw_8bit"}))
    assert session.history[-1]["loss"] < session.history[0]["loss"]


def test_accelerate_configs_parse():
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    kinds = {p.name: yaml.safe_load(p.read_text())["distributed_type"] for p in root.glob("*.yaml")}
    assert kinds == {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP",
                     "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED"}


def test_eval_fraction_holds_rows_out_of_training(make_recipe):
    """Without data.eval, data.eval_fraction holds rows out; no row is on both sides, and the
    held-out rows are evaluated."""
    s = train(make_recipe("held", data={"eval": None, "eval_fraction": 0.25},
                          train={"max_steps": 2}, eval={"every": 2}))
    train_ids = {r["sample_id"] for r in s.train_records}
    held_ids = {r["sample_id"] for r in s.eval_records}
    assert held_ids and train_ids and not train_ids & held_ids
    assert any("eval/loss" in row for row in s.history)


def test_eval_fraction_and_an_eval_file_are_refused_together(make_recipe):
    from mmalign.errors import ConfigError

    with pytest.raises(ConfigError, match="data.eval .* or data.eval_fraction"):
        make_recipe("both", data={"eval_fraction": 0.25})
