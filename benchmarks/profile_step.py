"""Where a training iteration's time goes: the kernels of a few iterations, by name.

    python -m benchmarks.profile_step --gan gan --mode graph --batch 64 --out profile

Runs fastgan's loop as the throughput benchmark does (warmed up: compiled or captured), then
records `--iterations` iterations with torch.profiler (CUDA kernels inside a graph replay are
recorded one by one). Writes kernels.txt (per kernel name: calls, total and mean time, sorted by
time; the kernels per iteration and their summed time first) and trace.json (open in
chrome://tracing or Perfetto).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.throughput import fastgan_runner, device_name
from fastgan.variants import VARIANTS


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="fastgan: %(message)s")
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gan", default="gan", choices=list(VARIANTS))
    parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    parser.add_argument("--mode", default="graph" if cuda else "eager", choices=["eager", "compile", "graph"])
    parser.add_argument("--precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--out", default="profile", help="folder for kernels.txt and trace.json")
    args = parser.parse_args(argv)

    device = "cuda" if cuda else "cpu"
    run, engine, accelerator = fastgan_runner(args.gan, args.arch, args.mode, args.precision, args.batch, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(args.iterations):
            run(i)
        if cuda:
            torch.cuda.synchronize()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out / "trace.json"))
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA] if cuda else []
    total_us = sum(e.device_time for e in kernels) if cuda else 0.0
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=60, max_name_column_width=90)
    head = (f"{args.gan} {args.arch} mode {engine.mode} precision {args.precision} batch {args.batch} on "
            f"{device_name(device)} (torch {torch.__version__}), {args.iterations} iterations\n")
    if cuda:
        head += (f"kernels per iteration: {len(kernels) / args.iterations:.1f}, summed kernel time per iteration: "
                 f"{total_us / args.iterations:.1f} us\n")
    (out / "kernels.txt").write_text(head + table)
    print(head + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
