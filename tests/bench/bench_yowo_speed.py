"""YOWO Table 9: clips per second of the full model (3D-ResNeXt-101 + Darknet-19 + CFAM, 24 classes,
224²) at batch 8, for 8- and 16-frame clips, measured side by side in one run.

The paper reports 62 and 34 fps on one Titan Xp at batch 8 (fps = clips/s: one clip per key frame).
We time the network's forward pass (the raw head map, as the paper's figure counts the network);
decoding and NMS are timed separately. The model and clip use channels-last (3D) memory on both devices:
on CPU, PyTorch's grouped 3D convolution (ResNeXt's cardinality-32 convs) takes a slow reference path in the
default layout (measured ~30x slower for one layer) and oneDNN's in channels-last. CUDA runs in bf16
autocast, CPU in float32. The 1-minute load average before and after is recorded: on a shared machine
other processes take CPU time from the benchmark. Results are merged into `results/yowo_speed.json` under the device kind
("cpu" or "gpu"), which `vad-repro tables yowo` reads.

    python tests/bench/bench_yowo_speed.py [--iters 3] [--warmup 1] [--batch 8] [--out results/yowo_speed.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from vad_repro.tables import hardware
from vad_repro.yowo.model import YOWODetector, YOWOConfig


def _sync(device: torch.device):
    if device.type == "cuda": torch.cuda.synchronize()


def time_forward(model, clip, iters: int, warmup: int) -> list[float]:
    "Seconds per forward pass of `model(clip)`, `iters` timed runs after `warmup` untimed ones."
    device = clip.device
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    times = []
    with torch.inference_mode(), amp:
        for i in range(warmup + iters):
            _sync(device); t0 = time.perf_counter()
            out = model(clip)
            _sync(device)
            if i >= warmup: times.append(time.perf_counter() - t0)
    return times, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "results" / "yowo_speed.json"))
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = YOWODetector(YOWOConfig(num_classes=24)).eval().to(device)
    model.backbone_3d.to(memory_format=torch.channels_last_3d)              # 5D weights
    for part in (model.backbone_2d, model.fusion, model.conv_final): part.to(memory_format=torch.channels_last)
    record = {"hardware": hardware(), "batch": a.batch, "size": a.size, "iters": a.iters, "warmup": a.warmup,
              "precision": ("bf16 autocast" if device.type == "cuda" else "float32") + ", channels-last",
              "threads": torch.get_num_threads(), "load_average_before": os.getloadavg()[0]}
    for frames in (8, 16):                                   # side by side, same process, same model
        clip = torch.randn(a.batch, 3, frames, a.size, a.size, device=device).to(memory_format=torch.channels_last_3d)
        times, out = time_forward(model, clip, a.iters, a.warmup)
        t_net = statistics.median(times)
        t0 = time.perf_counter(); model.detect(out.float()); t_post = time.perf_counter() - t0
        record[f"{frames}f"] = {"clips_per_s": a.batch / t_net, "seconds_per_batch": t_net,
                                "all_seconds": times, "postprocess_seconds_per_batch": t_post}
        print(f"{frames} frames: {a.batch / t_net:.2f} clips/s ({t_net:.2f} s per batch of {a.batch}; "
              f"decode + NMS {t_post * 1000:.1f} ms)", flush=True)
    record["load_average_after"] = os.getloadavg()[0]   # other processes sharing the CPU slow it down
    record["ratio_8f_over_16f"] = record["8f"]["clips_per_s"] / record["16f"]["clips_per_s"]
    print(f"8f / 16f speed ratio: {record['ratio_8f_over_16f']:.2f} (paper: 62 / 34 = {62 / 34:.2f})")
    out_path = Path(a.out)
    data = json.loads(out_path.read_text()) if out_path.exists() else {}
    data["gpu" if device.type == "cuda" else "cpu"] = record
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data, indent=1) + "\n")
    print(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
