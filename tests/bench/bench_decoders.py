"""Benchmark: `read_clip` against the video decoders a user would pick instead, and the input pipeline.

Part 1, decoders. One run, the same files and the same clips for every decoder:

- `read_clip` (`vad_repro.data.read_clip`, PyAV): seek to the keyframe before the clip, feed packets,
  skip the non-reference frames the clip does not need, convert only the kept frames to RGB;
- `torchcodec` (`VideoDecoder(...).get_frames_at(indices)`, `seek_mode="exact"` and `"approximate"`);
- `decord` (`VideoReader(...).get_batch(indices)`);
- `opencv` (`cv2.VideoCapture`, `CAP_PROP_POS_FRAMES` seek to the clip's first frame, then `read()` in order,
  BGR -> RGB for the kept frames);
- `pytorchvideo` (`EncodedVideo.from_path(..., decoder="pyav").get_clip(start, end)`: PySlowFast's PyAV
  clip decoding, seek 1024 pts before the start, every frame of the window to RGB float, then the clip's
  frames picked from the window).

Each clip opens its file anew, as a `Dataset.__getitem__` does. Files: the two real 298x224 H.264
videos of `shared/data/real_videos` as published (one keyframe each), and 60 s re-encodings of them
(looped, H.264 by libx264 `veryfast`, 25 fps, B-frames) at 298x224 and upscaled to 960x720, with a
keyframe every 25 frames (1 s) and every 250 frames (10 s). Clips: AVA-style (32 frames, stride 2,
key frame in the centre) and UCF/J-HMDB-style (16 frames, stride 1, key frame last), key frames drawn
at random (fixed seed). Each decoder runs in a fresh subprocess per threading mode (`1`: one decoding
thread; `auto`: the library's own multi-threaded setting), which reports wall and CPU time, peak
resident memory (`VmHWM`, C allocations included) and, after the timing, exactness against
a full sequential PyAV decode at the same indices (max abs difference; a returned frame that matches
another index better is reported as an offset).

Part 2, input pipeline: a torch `DataLoader` over the engine's synthetic AVA dataset (`build_data` of a
config), N = 0, 1, 2, 4 worker processes, clips/s.

    python tests/bench/bench_decoders.py [--out results/decode_benchmark] [--clips-224 10] [--clips-720 4] [--exact 2]

Optional packages (the `bench` extra): `pip install torchcodec decord opencv-python-headless pytorchvideo`
(torchcodec needs FFmpeg's shared libraries: `apt-get install ffmpeg` on Debian); a decoder that does
not import is recorded with its error and its cells left empty.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REAL = Path(os.environ.get("VAD_REPRO_REAL_VIDEOS", Path(__file__).resolve().parents[3] / "shared/data/real_videos"))
CACHE = Path(os.environ.get("VAD_REPRO_CACHE", Path.home() / ".cache/vad_repro")) / "decode_bench"
CLIP_KINDS = {"ava": (32, 2, "center"), "ucf": (16, 1, "last")}     # (frames, stride, key position)
SECONDS, FPS = 60, 25
DECODERS = ["read_clip", "torchcodec", "torchcodec_approx", "decord", "opencv", "pytorchvideo"]
THUMB = 8                                                            # thumbnails: every 8th pixel


def _cpu_model() -> str:
    "The CPU's model name (Linux), else the architecture."
    try: return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration): return platform.machine()


# ---------------------------------------------------------------- the files
def source_frames() -> list:
    "Every frame of the two real videos, as yuv420p planes (the encoder's input)."
    import av
    frames = []
    for name in ("golfswing.mp4", "skateboarding.mp4"):
        with av.open(str(REAL / name)) as c:
            frames += [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    return frames


def encode_loop(path: Path, frames: list, n: int, W: int, H: int, gop: int) -> Path:
    "Re-encode the real frames looped to `n` frames at W x H (bicubic upscale), H.264 with a keyframe every `gop` frames."
    import av
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "20", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "veryfast"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="yuv420p")
            if (f.width, f.height) != (W, H):
                f = f.reformat(width=W, height=H, interpolation="BICUBIC")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())
    tmp.rename(path)
    return path


def bench_files() -> list[dict]:
    "The files to decode: `{name, path, kind}`; re-encodings are cached in `$VAD_REPRO_CACHE/decode_bench`."
    files = [{"name": p.name, "path": str(p), "kind": "298x224, as published (1 keyframe)"} for p in sorted(REAL.glob("*.mp4"))]
    CACHE.mkdir(parents=True, exist_ok=True)
    frames = None
    for W, H in ((298, 224), (960, 720)):
        for gop in (25, 250):
            path = CACHE / f"real{H}p_gop{gop}_{SECONDS}s.mp4"
            if not path.exists():
                frames = frames if frames is not None else source_frames()
                encode_loop(path, frames, SECONDS * FPS, W, H, gop)
            files.append({"name": path.name, "path": str(path), "kind": f"{W}x{H}, keyframe every {gop // FPS} s"})
    return files


def keyframes(path: str) -> np.ndarray:
    "0-based indices of the keyframes (from the packets, nothing decoded)."
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        return np.array(sorted(int(round((p.pts - start) * s.time_base * s.average_rate))
                               for p in c.demux(s) if p.pts is not None and p.is_keyframe))


def make_plan(files: list[dict], n_clips: dict, n_exact: int, seed: int) -> dict:
    "Per file and clip kind: the random key frames, the clips' indices, the frames from the keyframe to the clip's end."
    from vad_repro.data.decode import clip_indices, num_video_frames, video_fps
    plan = {"files": []}
    for f_i, f in enumerate(files):
        N = num_video_frames(f["path"]); kf = keyframes(f["path"])
        entry = {**f, "frames": N, "fps": video_fps(f["path"]), "clips": {}}
        big = "720" in f["kind"]
        for c_i, (kind, (T, s, key)) in enumerate(CLIP_KINDS.items()):
            rng = np.random.default_rng([seed, f_i, c_i])
            keys = rng.integers(0, N, n_clips["720" if big else "224"]).tolist()
            idx = [clip_indices(k, T, s, key, N).tolist() for k in keys]
            span = [int(max(i) - kf[kf <= min(i)].max() + 1) for i in idx]   # keyframe .. last frame, inclusive
            entry["clips"][kind] = {"T": T, "stride": s, "key": key, "key_frames": keys, "indices": idx,
                                    "needed": [len(set(i)) for i in idx], "keyframe_to_last": span, "n_exact": n_exact}
        plan["files"].append(entry)
    return plan


def write_reference(plan: dict, folder: Path) -> None:
    "Full sequential PyAV decode of each file: frames at the exactness clips' indices (npy) and thumbnails of all frames."
    from vad_repro.data.decode import iter_video_frames
    for f in plan["files"]:
        want = sorted({i for c in f["clips"].values() for idx in c["indices"][:c["n_exact"]] for i in idx})
        pos = {i: k for k, i in enumerate(want)}
        full, thumbs = None, []
        for i, frame in enumerate(iter_video_frames(f["path"])):
            thumbs.append(frame[::THUMB, ::THUMB].copy())             # (a copy: a view keeps the frame)
            if i in pos:
                if full is None:
                    full = np.lib.format.open_memmap(folder / f"{f['name']}.ref.npy", "w+", np.uint8, (len(want), *frame.shape))
                full[pos[i]] = frame
        full.flush(); del full
        np.save(folder / f"{f['name']}.thumbs.npy", np.stack(thumbs))
        f["ref"] = {"indices": want, "frames": str(folder / f"{f['name']}.ref.npy"), "thumbs": str(folder / f"{f['name']}.thumbs.npy")}


# ---------------------------------------------------------------- the decoders (run in a worker subprocess)
def make_reader(name: str, threads: str):
    """`(read(path, clip, fps, N) -> output, to_thwc(output) -> uint8 (T,H,W,3), settings)` for one decoder.

    `clip` is `(key_frame, T, stride, key, indices)`; `threads` is "1" or "auto"."""
    one = threads == "1"
    if name == "read_clip":
        from vad_repro.data.decode import read_clip
        n = 1 if one else 0
        return (lambda path, c, fps, N: read_clip(path, c[0], c[1], c[2], c[3], n_frames=N, threads=n),
                lambda out: out, f"threads={n}, thread_type=AUTO (library default: threads=0)")
    if name.startswith("torchcodec"):
        import torch
        from torchcodec.decoders import VideoDecoder
        mode = "approximate" if name.endswith("approx") else "exact"
        n = 1 if one else 0
        if one: torch.set_num_threads(1)
        return (lambda path, c, fps, N: VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=n,
                                                     seek_mode=mode).get_frames_at(c[4]).data,
                lambda out: out.numpy(), f"num_ffmpeg_threads={n}, seek_mode={mode} (library default: num_ffmpeg_threads=1, exact)")
    if name == "decord":
        import decord
        n = 1 if one else 0
        return (lambda path, c, fps, N: decord.VideoReader(path, ctx=decord.cpu(0), num_threads=n).get_batch(c[4]).asnumpy(),
                lambda out: out, f"num_threads={n} (library default: 0, automatic)")
    if name == "opencv":
        import cv2
        if one: cv2.setNumThreads(1)
        params = [cv2.CAP_PROP_N_THREADS, 1] if one else []

        def read(path, c, fps, N):
            idx = c[4]; wanted = set(idx); first, last = min(idx), max(idx)
            cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            got = {}
            for i in range(first, last + 1):
                ok, bgr = cap.read()
                if not ok: raise RuntimeError(f"{path}: OpenCV could not read frame {i}")
                if i in wanted: got[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            cap.release()
            return np.stack([got[i] for i in idx])
        return read, lambda out: out, ("CAP_PROP_N_THREADS=1, setNumThreads(1)" if one else "OpenCV defaults (FFmpeg threads = CPU count)")
    if name == "pytorchvideo":
        from pytorchvideo.data.encoded_video import EncodedVideo

        def read(path, c, fps, N):
            idx = c[4]; first, last = min(idx), max(idx)
            video = EncodedVideo.from_path(path, decode_audio=False, decoder="pyav")
            if one: video._container.streams.video[0].thread_count = 1
            rate = Fraction(fps).limit_denominator(1001)
            window = video.get_clip(first / rate, (last + 1) / rate)["video"]          # (3, last-first+1, H, W) float
            video.close()
            return window[:, [i - first for i in idx]]
        return (read, lambda out: out.permute(1, 2, 3, 0).round().clamp(0, 255).byte().numpy(),
                "thread_count=1" if one else "PyAV defaults (thread_type=SLICE, thread_count=0: automatic)")
    raise ValueError(name)


def maxrss_mib() -> float:
    """Peak resident memory of this process in MiB: `VmHWM` of /proc/self/status (C allocations included).

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the parent's peak across fork + exec into it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, threads: str, plan_path: Path, out_path: Path) -> None:
    "Time one decoder on every file and clip kind, record its peak memory, then check its frames."
    plan = json.loads(plan_path.read_text())
    result = {"decoder": name, "threads": threads, "load_start": os.getloadavg()}
    try:
        read, to_thwc, settings = make_reader(name, threads)
    except Exception as e:                                  # not installed / does not load: recorded, cells empty
        result["error"] = f"{type(e).__name__}: {e}"
        out_path.write_text(json.dumps(result)); return
    result["settings"], result["rss_after_import_mib"] = settings, maxrss_mib()
    clip = lambda c, j: (c["key_frames"][j], c["T"], c["stride"], c["key"], c["indices"][j])
    rows = []
    for f in plan["files"]:
        for kind, c in f["clips"].items():
            row = {"file": f["name"], "clip": kind}
            try:
                read(f["path"], clip(c, 0), f["fps"], f["frames"])          # warm-up (page cache, lazy init)
                w0, c0 = time.perf_counter(), time.process_time()
                for j in range(len(c["indices"])):
                    read(f["path"], clip(c, j), f["fps"], f["frames"])
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                row.update(clips=len(c["indices"]), wall_s=wall, cpu_s=cpu, clips_per_s=len(c["indices"]) / wall,
                           clips_per_cpu_s=len(c["indices"]) / cpu)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
    result["peak_rss_mib"] = maxrss_mib()
    result["load_end"] = os.getloadavg()
    for f in plan["files"]:                                  # exactness, after the memory peak was read
        ref = np.load(f["ref"]["frames"], mmap_mode="r"); thumbs = np.load(f["ref"]["thumbs"]).astype(np.int16)
        pos = {i: k for k, i in enumerate(f["ref"]["indices"])}
        for kind, c in f["clips"].items():
            row = next(r for r in rows if r["file"] == f["name"] and r["clip"] == kind)
            if "error" in row: continue
            max_diff, offsets, n_frames, decoded = 0, [], 0, []
            try:
                for j in range(c["n_exact"]):
                    got = to_thwc(read(f["path"], clip(c, j), f["fps"], f["frames"]))
                    for i, frame in zip(c["indices"][j], got):
                        if frame.shape != ref.shape[1:]:
                            raise ValueError(f"frame shape {frame.shape}, reference {ref.shape[1:]}")
                        max_diff = max(max_diff, int(np.abs(frame.astype(np.int16) - ref[pos[i]]).max()))
                        lo, hi = max(0, i - 4), min(len(thumbs), i + 5)          # which frame does it look like?
                        err = np.abs(thumbs[lo:hi] - frame[::THUMB, ::THUMB].astype(np.int16)).mean((1, 2, 3))
                        best = lo + int(np.argmin(err))
                        if err[best - lo] < err[i - lo]: offsets.append(best - i)
                        n_frames += 1
                    if name == "read_clip":                  # frames decoded: measurable through PyAV
                        from vad_repro.data.decode import decode_video_frames
                        decoded.append(decode_video_frames(f["path"], c["indices"][j], threads=1)[1])
                row.update(exact_clips=c["n_exact"], exact_frames=n_frames, max_abs_diff=max_diff,
                           offset_frames=len(offsets), offsets=sorted(set(offsets)))
                if decoded:
                    row["decoded_per_clip"] = float(np.mean(decoded))
            except Exception as e:
                row["exact_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    result["rows"] = rows
    out_path.write_text(json.dumps(result))


def run_workers(plan_path: Path, folder: Path, decoders: list[str]) -> list[dict]:
    results = []
    for name in decoders:
        for threads in ("1", "auto"):
            out = folder / f"{name}_{threads}.json"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--worker", name, threads, str(plan_path), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                results.append({"decoder": name, "threads": threads,
                                "error": f"worker exit {proc.returncode}: {proc.stderr.strip()[-400:]}"})
            else:
                results.append(json.loads(out.read_text()))
            results[-1]["worker_wall_s"] = time.perf_counter() - t0
            print(f"{name} threads={threads}: {results[-1]['worker_wall_s']:.0f} s"
                  + (f"  ERROR {results[-1]['error'][:200]}" if "error" in results[-1] else ""), flush=True)
    return results


# ---------------------------------------------------------------- part 2: the input pipeline
def pipeline(config: str, workers: list[int], max_batches: int) -> dict:
    "Clips/s of a DataLoader over the config's synthetic AVA training set for each number of workers."
    import torch
    from torch.utils.data import DataLoader
    from vad_repro.engine.config import get_config
    from vad_repro.engine.data import build_data, collate
    cfg = get_config(config)
    dataset = build_data(cfg, cfg.train_split, train=True)
    out = {"config": config, "dataset": f"{len(dataset)} clips, {cfg.num_frames} frames stride {cfg.stride}, "
                                        f"size {cfg.size}, transforms {cfg.transforms or cfg.paper}",
           "batch_size": cfg.batch_size, "rows": []}
    for n in workers:
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=n, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0), persistent_workers=n > 0)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter(); clips, first, b = 0, None, 0
        while b < max_batches:                                # epochs until `max_batches` batches
            for batch in loader:
                clips += len(batch["clip"]); b += 1
                if first is None: first = (time.perf_counter() - t0, clips)
                if b >= max_batches: break
        total = time.perf_counter() - t0
        del loader
        steady = (clips - first[1]) / (total - first[0]) if clips > first[1] else None
        out["rows"].append({"workers": n, "clips": clips, "seconds": total, "clips_per_s": clips / total,
                            "first_batch_s": first[0], "clips_per_s_after_first_batch": steady, "load": load0})
        print(f"pipeline {config} workers={n}: {clips / total:.1f} clips/s", flush=True)
    return out


# ---------------------------------------------------------------- report
def fmt(x, spec=".1f"):
    return "" if x is None else format(x, spec)


def summarise(plan: dict, results: list[dict]) -> list[dict]:
    "One row per decoder, threads, file kind and clip kind (files of one kind pooled: clips / total seconds)."
    kinds = {f["name"]: f["kind"] for f in plan["files"]}
    table = []
    for r in results:
        for kind in dict.fromkeys(kinds.values()):
            for clip in CLIP_KINDS:
                rows = [x for x in r.get("rows", []) if kinds[x["file"]] == kind and x["clip"] == clip]
                ok = [x for x in rows if "error" not in x]
                files = [f for f in plan["files"] if f["kind"] == kind]
                needed = np.mean([n for f in files for n in f["clips"][clip]["needed"][:f["clips"][clip]["n_exact"]]])
                span = np.mean([n for f in files for n in f["clips"][clip]["keyframe_to_last"][:f["clips"][clip]["n_exact"]]])
                s = {"decoder": r["decoder"], "threads": r["threads"], "file_kind": kind, "clip": clip,
                     "error": r.get("error") or "; ".join(x["error"] for x in rows if "error" in x) or None}
                if ok and len(ok) == len(rows):
                    n = sum(x["clips"] for x in ok)
                    s.update(clips_per_s=n / sum(x["wall_s"] for x in ok), clips_per_cpu_s=n / sum(x["cpu_s"] for x in ok),
                             peak_rss_mib=r["peak_rss_mib"], rss_after_import_mib=r["rss_after_import_mib"])
                    if all("max_abs_diff" in x for x in ok):
                        s.update(max_abs_diff=max(x["max_abs_diff"] for x in ok),
                                 offset_frames=sum(x["offset_frames"] for x in ok),
                                 exact_frames=sum(x["exact_frames"] for x in ok),
                                 offsets=sorted({o for x in ok for o in x["offsets"]}))
                    else:
                        s["error"] = "; ".join(x.get("exact_error", "") for x in ok)
                    if all("decoded_per_clip" in x for x in ok):
                        s["decoded_per_returned"] = float(np.mean([x["decoded_per_clip"] for x in ok])) / needed
                s["keyframe_to_last_per_needed"] = span / needed
                table.append(s)
    return table


def versus_fastest(table: list[dict]) -> list[dict]:
    "Per (threads, file kind, clip): read_clip's clips/CPU-s, the fastest other decoder's, and their ratio."
    rows = []
    for s in table:
        if s["decoder"] != "read_clip" or s.get("clips_per_cpu_s") is None: continue
        peers = [p for p in table if p["decoder"] != "read_clip" and p.get("clips_per_cpu_s") is not None
                 and (p["threads"], p["file_kind"], p["clip"]) == (s["threads"], s["file_kind"], s["clip"])]
        if not peers: continue
        best = max(peers, key=lambda p: p["clips_per_cpu_s"])
        rows.append(dict(threads=s["threads"], file_kind=s["file_kind"], clip=s["clip"], read_clip=s["clips_per_cpu_s"],
                         peer=best["decoder"], peer_value=best["clips_per_cpu_s"], ratio=s["clips_per_cpu_s"] / best["clips_per_cpu_s"]))
    return rows


def markdown(meta: dict, table: list[dict], pipes: list[dict], errors: list[str]) -> str:
    L = [f"# Clip decoding: `read_clip` against other decoders (`tests/bench/bench_decoders.py`)", "",
         f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
         f"Load average (1 min) at start / end: {meta['load_start']:.1f} / {meta['load_end']:.1f}; "
         f"total run {meta['seconds']:.0f} s  ", f"Packages: {meta['versions']}", "",
         "Columns: **clips/s** wall-clock; **clips/CPU-s** clips per second of process CPU time (all threads), "
         "i.e. clips/s per core; **peak RSS** peak resident memory (VmHWM) of the decoder's own subprocess (after importing it: "
         "in brackets); **max |Δ|** the largest difference (0-255) of any returned frame against a full "
         "sequential PyAV decode at the same index, **off** frames that look more like a neighbouring "
         "frame than their own (offset in brackets), over the first clips of each file; **dec/ret** frames "
         "decoded per frame returned (measured for read_clip; `kf→last/ret`: frames from the keyframe "
         "before the clip to its last frame, per distinct frame returned, what a decoder without frame "
         "skipping decodes).", ""]
    for threads, title in (("1", "One decoding thread"), ("auto", "Each library's multi-threaded setting")):
        L += [f"## {title}", "",
              "| file kind | clip | decoder | clips/s | clips/CPU-s | peak RSS MiB | max \\|Δ\\| | off | dec/ret | kf→last/ret |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in table:
            if s["threads"] != threads: continue
            off = "" if s.get("offset_frames") is None else (
                f"{s['offset_frames']}/{s['exact_frames']}" + (f" ({', '.join(f'{o:+d}' for o in s['offsets'])})" if s["offsets"] else ""))
            rss = "" if s.get("peak_rss_mib") is None else f"{s['peak_rss_mib']:.0f} ({s['rss_after_import_mib']:.0f})"
            L.append(f"| {s['file_kind']} | {s['clip']} | {s['decoder']} | {fmt(s.get('clips_per_s'))} | "
                     f"{fmt(s.get('clips_per_cpu_s'))} | {rss} | {fmt(s.get('max_abs_diff'), 'd')} | {off} | "
                     f"{fmt(s.get('decoded_per_returned'), '.2f')} | {fmt(s.get('keyframe_to_last_per_needed'), '.2f')} |")
        L.append("")
    L += ["## read_clip against the fastest other decoder, per core", "",
          "clips/CPU-s of read_clip divided by the best other decoder's on the same files and clips (>= 1: read_clip is as fast or faster).", "",
          "| threads | file kind | clip | read_clip | fastest other | its clips/CPU-s | ratio |", "|---|---|---|---:|---|---:|---:|"]
    for r in versus_fastest(table):
        L.append(f"| {r['threads']} | {r['file_kind']} | {r['clip']} | {r['read_clip']:.1f} | {r['peer']} | {r['peer_value']:.1f} | {r['ratio']:.2f} |")
    L.append("")
    if errors:
        L += ["## Decoders that did not run", ""] + [f"- {e}" for e in errors] + [""]
    if pipes:
        L += ["## Input pipeline", "",
              "A torch `DataLoader` (batch size of the config, shuffled, persistent workers, epochs repeated up to the batch count) over the engine's synthetic "
              "AVA training set (`vad_repro.engine.data.build_data`), clips/s including worker start-up, and after the first batch.", ""]
        for p in pipes:
            L += [f"`{p['config']}`: {p['dataset']}, batch {p['batch_size']}", "",
                  "| workers | clips | seconds | clips/s | first batch s | clips/s after first batch | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
            L += [f"| {r['workers']} | {r['clips']} | {r['seconds']:.1f} | {r['clips_per_s']:.1f} | {r['first_batch_s']:.2f} | "
                  f"{fmt(r['clips_per_s_after_first_batch'])} | {r['load']:.1f} |" for r in p["rows"]]
            L.append("")
    return "\n".join(L)


def versions() -> str:
    out = []
    for mod in ("av", "torch", "torchcodec", "decord", "cv2", "pytorchvideo"):
        try:
            m = __import__(mod); out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception as e:
            out.append(f"{mod} absent ({type(e).__name__})")
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    parser.add_argument("--clips-224", type=int, default=10, help="timed clips per 298x224 file and clip kind")
    parser.add_argument("--clips-720", type=int, default=4, help="timed clips per 960x720 file and clip kind")
    parser.add_argument("--exact", type=int, default=2, help="clips per file and kind checked against the full decode")
    parser.add_argument("--decoders", nargs="*", default=DECODERS)
    parser.add_argument("--pipeline", nargs="*", default=["woo_tiny", "minimal_small"], help="configs (synthetic AVA)")
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2, 4])
    parser.add_argument("--pipeline-batches", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, threads, plan, out = args.worker
        return worker(name, threads, Path(plan), Path(out))
    import tempfile
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = bench_files()
        plan = make_plan(files, {"224": args.clips_224, "720": args.clips_720}, args.exact, args.seed)
        write_reference(plan, tmp)
        (tmp / "plan.json").write_text(json.dumps(plan))
        print(f"files and reference ready: {time.perf_counter() - t0:.0f} s", flush=True)
        results = run_workers(tmp / "plan.json", tmp, args.decoders)
    pipes = [pipeline(c, args.workers, args.pipeline_batches) for c in args.pipeline]
    table = summarise(plan, results)
    errors = sorted({f"{r['decoder']}: {r['error']}" for r in results if "error" in r})
    meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
            "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "load_start": load_start, "load_end": os.getloadavg()[0], "seconds": time.perf_counter() - t0,
            "versions": versions(), "seed": args.seed,
            "files": [{k: f[k] for k in ("name", "kind", "frames", "fps")} | {"keyframes": keyframes(f["path"]).tolist()[:12]}
                      for f in plan["files"]]}
    text = markdown(meta, table, pipes, errors)
    print(text)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "table": table, "workers": results,
                                                             "input_pipeline": pipes}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
