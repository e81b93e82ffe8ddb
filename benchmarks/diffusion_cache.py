"""Seconds per tiny-SDXL Diffusion-DPO step with the frozen-work cache on and off, in one run.

    python benchmarks/diffusion_cache.py [--steps 20] [--batch 4] [--resolution 64]

Two tiny SDXL models: the default one (small VAE and text encoders), and one whose VAE encoder
and text encoders are as heavy next to its UNet as SDXL's are next to SDXL's UNet at 1024 px
(``mmalign.models.diffusion.SDXL_PROPORTIONS``: in forward FLOPs, VAE encoder 0.7 x UNet, text
encoders 0.016 x UNet), which is the representative one. Writes
benchmarks/results/diffusion_cache.json. A step is: collate, draw, policy surrogate with
gradient, reference surrogate (adapters off) without, DPO loss, backward, AdamW step. Also the
cache's size on disk with float32 storage and with ``cache_dtype: bfloat16`` (the shared
frozen-work cache, :mod:`mmalign.modalities.frozen_cache`).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from peft import LoraConfig
from PIL import Image

import mmalign.objectives as objectives
from mmalign.modality import ModelSpec
from mmalign.models.diffusion import SDXL_PROPORTIONS
from mmalign.modalities.image_diffusion import ImageDiffusionModality

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _png(seed: int, size: int) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _data(folder: Path, rows: int, size: int) -> str:
    table = [dict(caption=f"picture {i}", jpg_0=_png(2 * i, size), jpg_1=_png(2 * i + 1, size), label_0=1.0)
             for i in range(rows)]
    path = folder / "bench.parquet"
    pq.write_table(pa.Table.from_pylist(table), str(path))
    return str(path)


def cache_megabytes(data: str, folder: Path, resolution: int, builder_args: dict, cache_dtype: str | None) -> float:
    """Size on disk of the prepared cache of ``data``."""
    modality = ImageDiffusionModality(resolution=resolution, random_flip=True, cache_dtype=cache_dtype)
    modality.load_policy(ModelSpec(builder="tiny_sdxl", builder_args=builder_args))
    records = modality.prepare(modality.load_records(data, "pickapic"), str(folder / f"cache-{cache_dtype}"))
    return round(sum(os.path.getsize(r["cache_file"]) for r in records) / 2 ** 20, 3)


def seconds_per_step(cache: bool, data: str, folder: Path, steps: int, batch_size: int, resolution: int,
                     builder_args: dict) -> float:
    torch.manual_seed(0)
    modality = ImageDiffusionModality(resolution=resolution, cache=cache, random_flip=True, caption_dropout=0.1)
    policy = modality.load_policy(ModelSpec(builder="tiny_sdxl", builder_args=builder_args))
    policy.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(data, "pickapic"), str(folder / "cache"))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]

    def step(i: int) -> None:
        batch = modality.collate(batches[i % len(batches)])
        batch.epoch = i // len(batches)
        draw = modality.draw(batch, 0, policy)
        pol = modality.surrogate(policy, batch, draw, frozenset())
        with torch.no_grad():
            policy.disable_adapters()
            ref = modality.surrogate(policy, batch, draw, frozenset())
            policy.enable_adapters()
        loss = objectives.get("dpo")(pol, ref, beta=5000.0).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(0)  # warm-up
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    # the median: the machine is shared, and a busy neighbour should not decide the result
    return statistics.median(times)


def compare(data: str, folder: Path, args, builder_args: dict) -> dict:
    """Median seconds per step with the cache off and on, their ratio, and the cache's size."""
    off = seconds_per_step(False, data, folder, args.steps, args.batch, args.resolution, builder_args)
    on = seconds_per_step(True, data, folder, args.steps, args.batch, args.resolution, builder_args)
    sizes = {f"cache_megabytes_{name}": cache_megabytes(data, folder, args.resolution, builder_args, dtype)
             for name, dtype in (("float32", None), ("bfloat16", "bfloat16"))}
    return {"builder_args": builder_args, "seconds_per_step_cache_off": round(off, 5),
            "seconds_per_step_cache_on": round(on, 5), "speedup_off_over_on": round(off / on, 3), **sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "diffusion_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable numbers on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _data(folder, rows=2 * args.batch, size=args.resolution + args.resolution // 4)
        models = {"tiny_sdxl": compare(data, folder / "tiny", args, {}),
                  "tiny_sdxl_sdxl_proportions": compare(data, folder / "proportional", args,
                                                        {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in SDXL_PROPORTIONS.items()})}
    result = {"lora": "r=4 on to_q, to_k, to_v, to_out.0", "resolution": args.resolution, "batch_size": args.batch,
              "steps": args.steps, "statistic": "median", "torch_threads": 1, "models": models}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
