"""The peer benchmarks at GPU sizes (benchmarks/peers/gpu.py), quick form: every arm once,
two steps, on CUDA in bf16, checking that they run there and write their results. The timed
runs are ``python benchmarks/peers/gpu.py``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="the peer benchmarks at GPU sizes (LLaVA-1.5-shaped, SDXL-shaped at 256 px, bf16) "
                           "need CUDA; the CPU ones are checked by test_bench_peers_smoke.py")
def test_gpu_peer_benchmarks_run(tmp_path):
    pytest.importorskip("trl")
    sys.path.insert(0, str(PEERS))
    import gpu

    assert gpu.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    vlm = json.loads((tmp_path / "peers_vlm_trl_gpu.json").read_text())
    sdxl = json.loads((tmp_path / "peers_sdxl_gpu.json").read_text())
    assert vlm["device"] == sdxl["device"] == "cuda"
    assert vlm["same_token_ids"] is True
    assert set(vlm["ratios"]) == {"frozen_copy", "lora", "precomputed_per_step", "precomputed_amortised"}
    assert set(sdxl["ratios"]) == {"mmalign_over_limit", "mmalign_over_naive"}
    assert all(v[0] > 0 for result in (vlm, sdxl) for v in result["seconds_per_step"].values())
    assert sdxl["exactness"]["abs_gap"] <= 1e-6
