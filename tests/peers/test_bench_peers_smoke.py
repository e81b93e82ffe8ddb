"""The peer benchmarks (benchmarks/peers/) run: every arm once, two steps each, on CPU.

Not a measurement (two steps give one interval on a shared machine): it checks that the
scripts work against the installed TRL, diffusers and mmalign, that they write every field
the results JSON promises, and that the physical-limit loop of the SDXL comparison computes
mmalign's own loss (to 1e-6) on the same batch before anything is timed.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import sdxl_naive  # noqa: E402
import vlm_trl  # noqa: E402

# one thread: a smoke test shares its cores with whatever else runs, and one thread cannot wait
# on a descheduled peer (the benchmarks themselves run two, see their OMP_WAIT_POLICY note)
QUICK = ["--repeats", "1", "--steps", "2", "--pairs", "8", "--threads", "1"]
COMMON = ("device", "threads", "repeats", "steps", "seconds_per_step", "median", "min_max", "ratios", "environment",
          "versions")


def check_common(result: dict, arms: set[str], ratios: set[str]) -> None:
    assert set(COMMON) <= set(result)
    assert result["device"] == "cpu" and result["threads"] == 1 and result["repeats"] == 1 and result["steps"] == 2
    assert set(result["seconds_per_step"]) == arms == set(result["median"]) == set(result["min_max"])
    for arm, values in result["seconds_per_step"].items():
        assert len(values) == 1 and values[0] > 0, arm
        low, high = result["min_max"][arm]
        assert low == high == result["median"][arm] == values[0]
    assert set(result["ratios"]) == ratios
    for name, r in result["ratios"].items():
        assert r["median_ratio"] > 0 and len(r["per_repetition"]) == 1, name
        low, high = r["min_max"]
        assert math.isclose(low, r["median_ratio"]) and math.isclose(high, r["median_ratio"])  # one repetition
        assert math.isclose(r["median_of_ratios"], r["median_ratio"])  # one repetition: the same number
        assert r["met"] == (r["median_of_ratios"] <= r["target"])
    # the steadier second view: the fastest step of each run, never slower than the median one
    assert set(result["fastest_step_seconds"]) == arms and set(result["fastest_step_ratios"]) == ratios
    for arm, values in result["fastest_step_seconds"].items():
        assert 0 < values[0] <= result["seconds_per_step"][arm][0], arm
    for package in ("torch", "transformers", "trl", "peft", "diffusers", "mmalign"):
        assert result["versions"][package][0].isdigit(), package


@pytest.mark.slow
def test_vlm_trl_runs_every_arm(tmp_path):
    out = tmp_path / "vlm.json"
    returned = vlm_trl.main([*QUICK, "--out", str(out)])
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(returned))
    check_common(result, {"mmalign_copy", "trl_copy", "mmalign_lora", "trl_lora", "mmalign_precomputed"},
                 {"frozen_copy", "lora", "precomputed_per_step", "precomputed_amortised"})
    assert result["same_token_ids"] is True and result["pairs"] == 8 and result["steps_per_epoch"] == 2
    assert len(result["precompute_pass_seconds"]) == 1 and result["precompute_pass_seconds"][0] > 0
    # both trainers start from the same weights with the reference equal to the policy
    assert all(abs(v[0] - math.log(2)) < 1e-6 for v in result["first_step_loss"].values())


@pytest.mark.slow
def test_sdxl_runs_every_arm_and_the_limit_computes_mmaligns_loss(tmp_path):
    out = tmp_path / "sdxl.json"
    sdxl_naive.main([*QUICK, "--out", str(out)])
    result = json.loads(out.read_text())
    check_common(result, {"mmalign", "limit", "naive"}, {"mmalign_over_limit", "mmalign_over_naive"})
    check = result["exactness"]
    assert check["abs_gap"] <= 1e-6
    assert abs(check["mmalign_loss"] - check["limit_loss"]) <= 1e-6
    assert abs(check["mmalign_loss"] - math.log(2)) > 1e-3  # policy and reference differ: a real check
    assert set(result["paired_step_ratios"]) == {"mmalign_over_limit", "mmalign_over_naive"}
    assert all(r["median"] > 0 and len(r["per_repetition"]) == 1 for r in result["paired_step_ratios"].values())
