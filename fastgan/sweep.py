"""Train several variants one after the other with their defaults, evaluate each, and write a report.

    python -m fastgan.sweep --epochs 25                      (all ten variants)
    python -m fastgan.sweep --gans gan,wgan_gp --epochs 5 --out sweeps/quick

Writes OUT/<variant>/ (each a normal run directory), OUT/report.md (images beside it) and
OUT/report.html (self-contained: images inlined).
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastgan import train
from fastgan.config import ConfigError, resolve
from fastgan.evaluate import Metrics, evaluate_run
from fastgan.variants import VARIANTS


@dataclass
class Row:
    gan: str
    status: str  # "ok", or why there is no result
    wall_s: float
    images_per_s: float | None = None
    metrics: Metrics | None = None


def _median_throughput(run_dir: Path) -> float | None:
    with (run_dir / "losses.csv").open() as f:
        values = [float(r["images_per_s"]) for r in csv.DictReader(f) if r.get("images_per_s")]
    return statistics.median(values) if values else None


def run_one(gan: str, out: Path, train_args: list[str], samples: int, data_dir: str | None) -> tuple[Row, Metrics | None]:
    """Train (or continue) one variant and score it; also the real-vs-real floor, when it got that far."""
    run_dir = out / gan
    start = time.perf_counter()
    status = train.main(["--gan", gan, "--out", str(run_dir), "--resume", "auto", *train_args])
    wall = time.perf_counter() - start
    if status != 0:
        return Row(gan, f"training exited with status {status}", wall), None
    result, floor, _ = evaluate_run(run_dir, samples, data_dir)
    return Row(gan, "ok", wall, _median_throughput(run_dir), result), floor


def _cells(m: Metrics | None) -> list[str]:
    if m is None:
        return ["-"] * 5
    acc = f"{m.label_accuracy:.3f}" if m.label_accuracy is not None else "-"
    return [f"{m.fd:.2f}", f"{m.score:.2f}", f"{m.coverage}/10", f"{m.class_kl:.3f}", acc]


HEADER = ["variant", "samples", "losses", "FD-LeNet", "score", "coverage", "class KL", "label acc", "wall s", "images/s", "status"]


def write_report(out: Path, rows: list[Row], floor: Metrics | None, epochs: int, arch: str, data: str) -> None:
    final = lambda gan: sorted((out / gan / "samples").glob("epoch_[0-9][0-9][0-9].png"))  # noqa: E731
    lines = [f"# fastgan sweep: {len(rows)} variants, {arch}, {epochs} epochs", "",
             f"Data: {data}. Metrics on generated samples against the held-out split (see fastgan/evaluate.py).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        grid = final(row.gan)
        pictures = [f"![{row.gan}]({grid[-1].relative_to(out)})" if grid else "-",
                    f"![losses]({(out / row.gan / 'losses.png').relative_to(out)})" if (out / row.gan / "losses.png").exists() else "-"]
        ips = f"{row.images_per_s:,.0f}" if row.images_per_s else "-"
        lines.append("| " + " | ".join([row.gan, *pictures, *_cells(row.metrics), f"{row.wall_s:.0f}", ips, row.status]) + " |")
    if floor is not None:
        lines.append("| real vs real | | | " + " | ".join(_cells(floor)) + " | | | floor / ceiling |")
    (out / "report.md").write_text("\n".join(lines) + "\n")

    def inline(path: Path) -> str:
        return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" width="{220 if "samples" in path.parts else 330}">'

    body = []
    for row in rows:
        grid, loss_png = final(row.gan), out / row.gan / "losses.png"
        ips = f"{row.images_per_s:,.0f}" if row.images_per_s else "-"
        cells = [html.escape(row.gan), inline(grid[-1]) if grid else "-", inline(loss_png) if loss_png.exists() else "-",
                 *_cells(row.metrics), f"{row.wall_s:.0f}", ips, html.escape(row.status)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if floor is not None:
        body.append("<tr><td>real vs real</td><td></td><td></td>" + "".join(f"<td>{c}</td>" for c in _cells(floor))
                    + "<td></td><td></td><td>floor / ceiling</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fastgan sweep</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px;text-align:center}} table{{border-collapse:collapse}}</style>
</head><body><h1>fastgan sweep: {len(rows)} variants, {html.escape(arch)}, {epochs} epochs</h1><p>Data: {html.escape(data)}.</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in HEADER)}</tr>{"".join(body)}</table></body></html>
"""
    (out / "report.html").write_text(page)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgan.sweep", description="Train and evaluate several variants; write report.md and report.html.")
    parser.add_argument("--gans", default=",".join(VARIANTS), help="comma-separated variants (default: all ten)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default: each variant's")
    parser.add_argument("--samples", type=int, default=10_000, help="generated samples per evaluation")
    parser.add_argument("--out", default=None, help="sweep folder (default runs/sweep-<time>)")
    args = parser.parse_args(argv)
    gans = [g.strip() for g in args.gans.split(",") if g.strip()]
    if not gans:
        parser.exit(2, f"{parser.prog}: error: --gans names no variant; choose from {', '.join(VARIANTS)}\n")
    if args.samples < 2:
        parser.exit(2, f"{parser.prog}: error: --samples must be at least 2, got {args.samples}\n")
    given = {"epochs": args.epochs, "arch": args.arch, "dataset": args.dataset, "data_dir": args.data_dir,
             "batch_size": args.batch_size}
    given = {k: v for k, v in given.items() if v is not None}
    try:  # every variant's settings checked before the first one trains
        for gan in gans:
            resolve(given | {"gan": gan})
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    train_args = [f"--{k.replace('_', '-')}={v}" for k, v in given.items()]
    rows, floor = [], None
    for gan in gans:
        print(f"fastgan.sweep: {gan} ({len(rows) + 1}/{len(gans)})", file=sys.stderr)
        row, row_floor = run_one(gan, out, train_args, args.samples, args.data_dir)
        floor = row_floor or floor
        rows.append(row)
        write_report(out, rows, floor, args.epochs, args.arch, args.data_dir or args.dataset)  # a report at every step
    print((out / "report.md").read_text())
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
