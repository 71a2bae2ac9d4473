"""Benchmark of the shared blocks, side by side in one run (not collected by pytest).

    python tests/bench/bench_blocks.py [--repeats R]

Prints median wall times and ratios:
- our zero-safe `box_iou` / `generalized_box_iou` against torchvision.ops (the price of the guard
  against 0/0 and of the broadcasting form),
- the NumPy `box_iou_np` the evaluation uses against the torch path,
- the batched Hungarian matcher for a DETR-sized batch (B clips x Q queries) and what part of it
  the CPU assignment (scipy) takes.
"""
import argparse
import statistics
import time

import torch
import torchvision

from vad_repro.boxes import box_iou, box_iou_np, generalized_box_iou
from vad_repro.matching import HungarianMatcher, batched_hungarian_match


def median_times(fns, repeats):
    "Median wall time of each fn; the fns are run round-robin so that load on the machine hits all alike."
    for fn in fns: fn()                                # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 0.7
    return torch.cat([xy, xy + 0.02 + torch.rand(n, 2, generator=generator) * 0.28], 1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench_blocks")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000, help="boxes per side of the IoU matrix")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(args.n, g), random_boxes(args.n, g)
    an, bn = a.double().numpy(), b.double().numpy()
    rows = [
        ("box_iou (ours)", lambda: box_iou(a, b)),
        ("box_iou (torchvision)", lambda: torchvision.ops.box_iou(a, b)),
        ("generalized_box_iou (ours)", lambda: generalized_box_iou(a, b)),
        ("generalized_box_iou (torchvision)", lambda: torchvision.ops.generalized_box_iou(a, b)),
        ("box_iou_np (float64)", lambda: box_iou_np(an, bn)),
    ]
    B, Q, C, G = 16, 100, 80, 4
    outputs = {"pred_logits": torch.randn(B, Q, C, generator=g), "pred_boxes": random_boxes(B * Q, g).view(B, Q, 4)}
    targets = [{"boxes": random_boxes(G, g), "labels": (torch.rand(G, C, generator=g) > 0.95).float()} for _ in range(B)]
    matcher = HungarianMatcher(cost_class=2.0, class_cost="focal")
    costs = torch.rand(B, Q, B * G, generator=g)
    rows += [(f"HungarianMatcher focal, B={B} Q={Q} C={C} G={G}/clip", lambda: matcher(outputs, targets)),
             ("  batched_hungarian_match alone, same shape (scipy)", lambda: batched_hungarian_match(costs, [G] * B))]
    results = list(zip([name for name, _ in rows], median_times([fn for _, fn in rows], args.repeats)))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}, "
          f"N = M = {args.n} boxes, median of {args.repeats}")
    for name, t in results:
        print(f"{name:55s} {t * 1e3:9.3f} ms")
    t = dict(results)
    print(f"ratio box_iou ours / torchvision:             {t['box_iou (ours)'] / t['box_iou (torchvision)']:.2f}")
    print(f"ratio GIoU ours / torchvision:                {t['generalized_box_iou (ours)'] / t['generalized_box_iou (torchvision)']:.2f}")
    print(f"ratio box_iou_np / box_iou (ours, torch):     {t['box_iou_np (float64)'] / t['box_iou (ours)']:.2f}")
    key = f"HungarianMatcher focal, B={B} Q={Q} C={C} G={G}/clip"
    print(f"share of the matcher spent in scipy:          {t['  batched_hungarian_match alone, same shape (scipy)'] / t[key]:.2f}")


if __name__ == "__main__":
    main()
