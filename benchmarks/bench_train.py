"""Training throughput of the DCGAN: images/s of the real GAN step, and model FLOP utilisation.

    python benchmarks/bench_train.py                      # 64x64 quickstart model, batch 64, fp32, CPU
    python benchmarks/bench_train.py --device cuda --size 256 --batch 256 --precision bf16 \\
        --channels-last --compile --peak-tflops 989      # the paper model on a GPU
    python benchmarks/bench_train.py --set model.kernel_size=4 --set model.g_channels=32  # other models

Times pipeline.train.step.gan_step (a discriminator update and a generator
update, as in training) on random maps already in the model's range, after
warm-up steps; reports the median over repeats of `steps` steps. FLOPs per image
per iteration are counted by pipeline.models.flops on the same model; MFU is
achieved FLOP/s over --peak-tflops (the device's dense peak for the precision).
"""

import argparse
import contextlib
import json
import statistics
import time

import torch

from pipeline.config import load_config
from pipeline.models import ModelArgs, build_models
from pipeline.models.flops import count_flops
from pipeline.train.step import Batch, GANParts, StepNoise, gan_step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (0: not reported)")
    ap.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                    help="model config override (default: the CosmoGAN model)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    margs = ModelArgs.from_config(load_config(None, args.set).model, args.size)
    gen, disc = (m.to(device) for m in build_models(margs))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    gen.to(memory_format=fmt)
    disc.to(memory_format=fmt)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    train_gen, train_disc = (torch.compile(gen), torch.compile(disc)) if args.compile else (gen, disc)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    real = (torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1).contiguous(memory_format=fmt)
    noise = StepNoise.draw(0, args.batch, margs.z_dim, 0.01)
    parts = GANParts(train_gen, train_disc, opt_g, opt_d, scaler, autocast, fmt, frozen_disc=disc)
    batch = Batch(real, torch.zeros(args.batch, 0, device=device))

    def run(n):
        for _ in range(n):
            gan_step(parts, batch, noise)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(args.warmup)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        run(args.steps)
        times.append(time.perf_counter() - t)
    sec_per_step = statistics.median(times) / args.steps
    images_per_s = args.batch / sec_per_step
    flops = count_flops(margs)
    result = {"size": args.size, "batch": args.batch, "model": args.set, "device": str(device), "precision": args.precision,
              "channels_last": args.channels_last, "compile": args.compile,
              "threads": torch.get_num_threads(), "images_per_s": round(images_per_s, 1),
              "ms_per_step": round(1e3 * sec_per_step, 2), "gflop_per_image_iteration":
              round(flops["train_iteration"] / 1e9, 3), "achieved_tflops":
              round(images_per_s * flops["train_iteration"] / 1e12, 3)}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    if args.peak_tflops:
        result["mfu"] = round(result["achieved_tflops"] / args.peak_tflops, 4)
        result["peak_tflops"] = args.peak_tflops
    print(json.dumps(result))


if __name__ == "__main__":
    main()
