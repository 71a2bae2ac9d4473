"""Benchmark: clips/s of `read_clip` (seek + decode only what is needed) against decoding the whole video.

Clips of 32 frames with stride 2 (`key="center"`, PySlowFast's AVA sampling), key frames spread evenly
over each video, on the real videos in `../shared/data/real_videos/` and on synthetic mp4s (rendered
by `vad_repro.data.synth`, H.264 with a keyframe every second, 30 fps). Side by side in one run:

- `read_clip`: seek to the keyframe before the clip, decode up to its last frame;
- `whole video`: decode every frame of the video, then cut the clip (what a loader without seeking does);
- frames decoded per clip against frames needed (distinct frames of the clip).

    python tests/bench/bench_decode.py [--out results/data_benchmark.md] [--clips 12] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vad_repro.data.decode import clip_indices, decode_video_frames, num_video_frames, read_video, write_video
from vad_repro.data import synth

REAL = Path(os.environ.get("VAD_REPRO_REAL_VIDEOS", Path(__file__).resolve().parents[3] / "shared/data/real_videos"))
T, STRIDE = 32, 2


def synthetic_videos(folder: Path) -> list[Path]:
    "Two synthetic AVA-style mp4s: 10 s at 112 px and 10 s at 224 px (30 fps, keyframe every 30 frames)."
    paths = []
    for size in (112, 224):
        cfg = synth.SynthSize(size, (1, 0), 10, 0, 0, (0, 0))
        frames, _ = synth.make_ava_video(np.random.default_rng([0, size]), cfg)
        paths.append(write_video(folder / f"synth_{size}px.mp4", frames, fps=30, gop=30))
    return paths


def bench_video(path: Path, n_clips: int, repeat: int) -> dict:
    N = num_video_frames(path)
    keys = np.linspace(0, N - 1, n_clips).round().astype(int)
    clips = [clip_indices(k, T, STRIDE, "center", N) for k in keys]
    best_seek, best_whole, decoded = float("inf"), float("inf"), []
    for _ in range(repeat):                                   # best of `repeat`, both methods in the same run
        t0 = time.perf_counter(); decoded = [decode_video_frames(path, idx)[1] for idx in clips]
        best_seek = min(best_seek, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for idx in clips:
            read_video(path)[idx]
        best_whole = min(best_whole, time.perf_counter() - t0)
    needed = [len(np.unique(idx)) for idx in clips]
    return {"video": path.name, "frames": N, "size": "x".join(map(str, read_video(path).shape[1:3][::-1])),
            "seek_cps": n_clips / best_seek, "whole_cps": n_clips / best_whole,
            "decoded": float(np.mean(decoded)), "needed": float(np.mean(needed))}


def table(rows: list[dict]) -> str:
    lines = ["| video | frames | W×H | read_clip clips/s | whole-video clips/s | speed-up | frames decoded / clip | frames needed / clip | decoded ÷ needed |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['video']} | {r['frames']} | {r['size']} | {r['seek_cps']:.1f} | {r['whole_cps']:.1f} | "
                     f"{r['seek_cps'] / r['whole_cps']:.1f}× | {r['decoded']:.1f} | {r['needed']:.1f} | {r['decoded'] / r['needed']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the Markdown table there")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = sorted(REAL.glob("*.mp4")) + synthetic_videos(Path(tmp))
        rows = [bench_video(v, args.clips, args.repeat) for v in videos]
    text = (f"clips of {T}×{STRIDE} (key='center'), {args.clips} key frames evenly spread per video, best of "
            f"{args.repeat}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"PyAV threads=AUTO\n\n" + table(rows))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
