"""The shipped toy checkpoints: where they are and whether they are the ones recorded.

``assets/toy/diffusion`` (a diffusers StableDiffusionPipeline folder), ``assets/toy/flow`` (a
diffusers StableDiffusion3Pipeline folder) and ``assets/toy/llava`` (a transformers
LlavaForConditionalGeneration folder with its processor) are made by ``pretrain_diffusion`` /
``pretrain_flow`` / ``pretrain_llava``. ``assets/toy/SHA256SUMS`` records the SHA-256 of
every file under them, in ``sha256sum`` format, so ``cd assets/toy && sha256sum -c SHA256SUMS``
checks them too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from mmalign import assets
from mmalign.errors import ConfigError

ROOT = assets.path("toy")
DIFFUSION = ROOT / "diffusion"
FLOW = ROOT / "flow"
LLAVA = ROOT / "llava"
HASHES = ROOT / "SHA256SUMS"
MODELS = ("diffusion", "flow", "llava", "qwen_video")
#: the script that makes each shipped model (``python -m mmalign.toy.<script>``)
SCRIPTS = {"diffusion": "pretrain_diffusion", "flow": "pretrain_flow", "llava": "pretrain_llava",
           "qwen_video": "pretrain_qwen_video"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(root: Path = ROOT) -> list[Path]:
    """Every file of the shipped models, relative to ``root``, sorted."""
    return sorted(p.relative_to(root) for name in MODELS for p in (root / name).rglob("*") if p.is_file())


def write_hashes(root: Path = ROOT) -> Path:
    """Record the SHA-256 of every model file in ``root/SHA256SUMS``."""
    lines = [f"{sha256(root / rel)}  {rel.as_posix()}" for rel in model_files(root)]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root / "SHA256SUMS"


def recorded_hashes(root: Path = ROOT) -> dict[str, str]:
    path = root / "SHA256SUMS"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; remake it with "
                          "python -c 'from mmalign.toy.checkpoints import write_hashes; write_hashes()'")
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {name.strip(): digest for digest, name in pairs}


def mismatches(root: Path = ROOT) -> list[str]:
    """Files whose SHA-256 differs from the record, or that are missing or unrecorded."""
    recorded = recorded_hashes(root)
    present = {rel.as_posix() for rel in model_files(root)}
    bad = sorted(name for name in recorded if name not in present or sha256(root / name) != recorded[name])
    return bad + sorted(present - set(recorded))


def require(path: Path) -> str:
    """``path`` as a string, or a ConfigError saying how to make the missing checkpoint."""
    if not path.is_dir():
        module = SCRIPTS.get(path.name, "pretrain_llava")
        raise ConfigError(f"the toy checkpoint {path} is missing; make it with "
                          f"python -m mmalign.toy.{module} --out {path} (see assets/README.md)")
    return str(path)
