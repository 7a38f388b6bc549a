"""generate: a dataset of maps from a trained generator, in the format make-data writes.

Map i is G(z_i) with z_i drawn from the stream seeded by (generate.seed, i), G the
checkpoint's moving average of the generator's weights when it has one (train.ema_decay),
mapped back to kappa by the run's pixel transform; the generator runs in eval
mode (BatchNorm from its running statistics), so a map does not depend on the
others in its batch. Batches start at fixed offsets within fixed shards, so the
output is the same (bit for bit on CPU) for any number of ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.config import config_from_dict, with_overrides
from pipeline.data.format import Manifest, file_sha256
from pipeline.data.sharded import DatasetPlan, write_sharded
from pipeline.data.transforms import PixelTransform
from pipeline.errors import DataError
from pipeline.models import build_models
from pipeline.train.checkpoint import load_checkpoint, resolve_checkpoint


def latent(seed: int, index: int, z_dim: int) -> torch.Tensor:
    """z for map ``index``: its own stream, so no map depends on how the work is split."""
    words = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(words)))


def generate(run_dir: str | Path, which: str, n_maps: int, out_dir: str | Path, overrides=(),
             progress: bool = True) -> Manifest:
    """Write n_maps generated maps to out_dir from the run's checkpoint ``which`` (last|best|PATH)."""
    if n_maps <= 0:
        raise DataError(f"--n must be positive, got {n_maps}")
    path = resolve_checkpoint(Path(run_dir), which)
    state = load_checkpoint(path)
    cfg = with_overrides(config_from_dict(state["config"]), overrides)
    gen_cfg = cfg.generate
    gen, _ = build_models(state["model_args"])
    average = state.get("generator_ema")  # the moving average of the weights, if the run kept one
    weights = "generator_ema" if average else "generator"
    gen.load_state_dict(average["weights"] if average else state["generator"])
    gen.eval()
    transform = PixelTransform.from_state_dict(state["transform"])
    size = state["model_args"]["image_size"]
    z_dim = state["model_args"]["z_dim"]
    checkpoint_sha = file_sha256(path)
    plan = DatasetPlan(
        out=Path(out_dir), n_maps=n_maps, shard_size=gen_cfg.shard_size, map_shape=(size, size),
        side_angle_deg=float(state["data"]["side_angle_deg"]), param_names=[],
        recipe={"checkpoint_sha256": checkpoint_sha, "generate": cfg.to_dict()["generate"], "n_maps": n_maps},
        provenance={"generator": "pipeline.models.Generator", "run": str(Path(run_dir).resolve()),
                    "checkpoint": str(path), "step": int(state["step"]), "weights": weights,
                    "seed_words": "(generate.seed, map_index)"})

    def produce(first: int, count: int):
        z = torch.stack([latent(gen_cfg.seed, i, z_dim) for i in range(first, first + count)])
        with torch.no_grad():
            maps = transform.inverse(gen(z))[:, 0].numpy().astype(np.float32)
        return maps, np.zeros((count, 0), np.float32)

    return write_sharded(plan, produce, block=gen_cfg.batch_size, desc="generate", progress=progress)
