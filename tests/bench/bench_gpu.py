"""GPU benchmark of the four detector families at their papers' inputs: inference, one training step, the input pipeline.

Run on a CUDA machine, from the repository root, with the package installed (`pip install -e .`):

    python tests/bench/bench_gpu.py

It takes about 7.5 minutes (a hard deadline of 450 s keeps it under 8) and writes `results/gpu_bench.json`
and `results/gpu_bench.md`. On CPU the same code runs on the `*_tiny` models (about a minute, never into
`results/`): `python tests/bench/bench_gpu.py --quick --out /tmp/gpu_bench_quick`.

**What is measured.** Six families, each at the input its paper measures or trains it on: YOWO with 16-
and 8-frame clips (3D-ResNeXt-101 + Darknet-19 + CFAM, 224², the UCF101-24 rows of Tables 9 / 2),
WOO SR50 (4 × 320²) and SFR50 (32 × 320²), ME-STAD SFR50 (32 × 256²), and CQ ViT-B inferring a
40-frame J-HMDB tube at Table 6's 256 × 360 (with, beside it, the 32-frame UCF tube). Each family's
engine config (`vad_repro/engine/config.py`) names the registered model, clip length, stride and size;
`models.spec(name)` gives the registry's measured input. For each family:

1. *Inference*, in eval mode with random weights on random clips, bf16 autocast, channels-last memory
   (`channels_last_3d` for the 3D convolutions and the 5-D clip, `channels_last` for 2D convolutions),
   cuDNN autotuning on. Two forward passes are timed: the *network* (the model's bare-tensor forward,
   the raw outputs before decoding) and the *detector* (the engine's `model({"clip": x})`, detections
   after decoding and NMS). Batch 1, the batch of the paper's speed figure where there is one, and the
   largest batch that fits: powers of two from 2 (cuDNN heuristics, no autotuning, one pass each) until
   `torch.cuda.OutOfMemoryError` (the cache emptied after it), another error, the cap, or the family's
   time budget stops the search; the record says which. Each timing: warm-up passes, then passes between
   `torch.cuda.synchronize()` calls until 1.5 s have gone by (at least 5, or 2 when a pass takes
   over 0.25 s); the median is reported.
2. *Compiled inference*, a second pass over the families once every eager measurement is in: the
   network forward under `torch.compile` (inductor, `dynamic=False`) at batch 1 and at the largest
   batch, in fresh processes. The first call (compilation plus one pass) is reported separately and is
   not part of the throughput.
3. *One training step*, the engine's own: `Trainer(config)` on the synthetic benchmark of the config's
   format (`synth_size='small'`), its `loader()` for one batch at the paper's per-GPU batch (the clip
   decoded by `read_clip`, the paper's training transforms, `collate`), then `Trainer.train_step` —
   bf16 autocast, the model's loss terms and weights, backward, gradient clipping, optimizer and
   schedule step, with the deterministic kernels the trainer selects. Seconds per step (median after
   warm-up steps) and peak memory (`torch.cuda.max_memory_allocated` over the timed steps).
4. *The input pipeline*, the trainer's `DataLoader` (its sampler, `SeededSamples`, `collate`, pinned
   memory) with N workers, batches moved to the device by the engine's `to_device`: clips per second
   after the first batch, to set beside the inference and training clips/s (does it keep the GPU fed?).
   The synthetic frames are 112² (real AVA / UCF frames are larger), so this is an upper bound of real
   decoding speed.

The papers' own speed figures are printed beside ours with the ratio; they were measured on other
hardware (YOWO Table 9: one NVIDIA Titan Xp at batch 8; CQ Table 6 does not name its GPU), so the ratio
compares machines as much as implementations.

**Robustness and time.** Every family (and every measurement inside it) runs in a try block: a failure
is recorded with its error and the run goes on. On CUDA each family's pass runs in its own process under
a time budget, and a process past it is stopped (with its DataLoader and compile workers) keeping what
it had measured. The eager pass (inference, training, pipeline) shares 56 % of the 450 s, at most 60 s a
family: the batch search stops doubling when the next trial and its timing would not fit, so "largest"
may mean "largest in the time" (the record says). The compile pass then takes the families in the order
YOWO-16, CQ, YOWO-8, WOO SR50, ME-STAD, WOO SFR50 (paper figures first), at least 90 s each, while time
is left: in 8 minutes only the first one or two compile, the others are marked skipped; `--total-s 900`
gives room for all. The synthetic data are generated in background processes while the first inference
measurements run. The elapsed time is printed before and after each family. `--quick` (CPU): the tiny
models and configs, batches 1-2, 2 iterations, one torch thread, no compilation (inductor takes minutes
on CPU; `--compile` forces it), 0 and 1 workers, all in one process; `--out DIR` is then required or a
temporary directory is chosen, and the repository's `results/` is refused. Without CUDA and without
`--quick` the script exits with status 2.
"""
from __future__ import annotations

import time

START = time.time()                    # the deadline counts from here, before torch is imported

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"


# ---------------------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class PaperSpeed:
    "A speed figure printed in a paper, on its hardware."
    source: str                 # table and row
    value: float
    unit: str                   # 'fps' (clips per second) or 'ms' (per clip / tube)
    batch: int                  # the batch it was measured at
    hardware: str               # as the paper states it


@dataclass(frozen=True)
class Row:
    "One measured input of a family: a config and its clip; the family's main row is the first."
    label: str
    config: str                 # engine config (paper run)
    num_classes: int            # the paper dataset's classes (inference; training takes the synthetic data's)
    hw: tuple | None = None     # (H, W) when not the registry's square size
    quick_config: str = ""
    quick_changes: dict = field(default_factory=dict)   # TrainConfig changes of the tiny stand-in
    quick_hw: tuple | None = None
    paper: PaperSpeed | None = None


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    rows: tuple                 # Row, ...: rows[0] is inferred, trained and fed; the others are inferred at batch 1
    train_batch: int            # the paper's clips per GPU per step
    train_batch_source: str


YOWO_BATCH = "the official code's 12-clip steps, accumulated to 128 on one GPU (nbs/81_config)"
# (the paper: one Titan Xp; the configs carry the global 128, and `--set accum_steps=11` trains it in parts of 11-12 clips)
FAMILIES = (
    Family("yowo_16f", "YOWO-16 (3D-ResNeXt-101 + Darknet-19 + CFAM), UCF101-24",
           (Row("16 × 224²", "yowo_resnext101_16f_ucf", 24, quick_config="yowo_tiny", quick_changes={"num_frames": 16},
                paper=PaperSpeed("YOWO Table 9, 'YOWO (16-frames, d=1)'", 34, "fps", 8, "one NVIDIA Titan Xp")),),
           12, YOWO_BATCH),
    Family("yowo_8f", "YOWO-8 (3D-ResNeXt-101 + Darknet-19 + CFAM), UCF101-24",
           (Row("8 × 224²", "yowo_t2_cfam_8f_ucf", 24, quick_config="yowo_tiny",
                paper=PaperSpeed("YOWO Table 9, 'YOWO (8-frames, d=1)'", 62, "fps", 8, "one NVIDIA Titan Xp")),),
           12, YOWO_BATCH),
    Family("woo_sr50", "WOO SR50 (SlowOnly R50 4×16), AVA",
           (Row("4 × 320²", "woo_sr50_4x16_ava22", 80, quick_config="woo_tiny", quick_changes={"num_frames": 4}),),
           2, "WOO §4.1: 16 clips on 8 GPUs, 2 clips per device"),
    Family("woo_sfr50", "WOO SFR50 (SlowFast R50 8×8), AVA",
           (Row("32 × 320²", "woo_sfr50_8x8_ava22", 80, quick_config="woo_tiny"),),
           2, "WOO §4.1: 16 clips on 8 GPUs, 2 clips per device"),
    Family("me_stad_sfr50", "ME-STAD SFR50 (SlowFast R50 8×8), AVA",
           (Row("32 × 256²", "me_stad_sfr50_ava22", 80, quick_config="me_stad_tiny"),),
           6, "ME-STAD §4.1: batch 48 with 8 GPUs, 6 clips per GPU"),
    Family("cq_vitb", "CQ ViT-B (VideoMAE), J-HMDB 40-frame tube",
           (Row("40 × 256 × 360", "cq_vitb_jhmdb", 21, hw=(256, 360), quick_config="cq_tiny",
                quick_changes={"model": "cq_vit_tiny"}, quick_hw=(64, 90),
                paper=PaperSpeed("CQ Table 6, J-HMDB, 'Ours ViT-B 40×1' (a 40-frame tube)", 432.0, "ms", 1,
                                 "not stated in the paper")),
            Row("32 × 256 × 360 (UCF tube)", "cq_vitb_ucf", 24, hw=(256, 360), quick_config="cq_tiny", quick_hw=(64, 90),
                paper=PaperSpeed("CQ Table 6, UCF, 'Ours ViT-B 32×1' (a 32-frame tube)", 370.0, "ms", 1,
                                 "not stated in the paper"))),
           1, "the authors' J-HMDB config: 8 GPUs × 1 clip (CQ_TUBE_RECIPE)"),
)
FAMILY_KEYS = tuple(f.key for f in FAMILIES)
COMPILE_PRIORITY = ("yowo_16f", "cq_vitb", "yowo_8f", "woo_sr50", "me_stad_sfr50", "woo_sfr50")   # paper figures first


@dataclass
class Settings:
    "How hard to measure: the CUDA run and the `--quick` CPU run differ only here."
    quick: bool
    device: str
    amp: bool                   # bf16 autocast in inference (training: the config's `amp`, the trainer's rule)
    warmup: int                 # untimed passes before timing
    min_iters: int
    max_iters: int
    target_s: float             # time passes until this much has gone by (or max_iters)
    batch_cap: int              # largest batch the search tries
    train_warmup: int
    train_iters: int
    workers: tuple              # DataLoader workers of the pipeline measurement
    pipeline_s: float           # timing window per worker count (after the first batch)
    pipeline_max_batches: int
    compile: bool
    total_s: float              # deadline of the whole run, from START
    eager_s: float              # the eager pass's share
    family_cap_s: float         # most seconds one family's eager pass may take
    compile_min_s: float = 90.0 # a compile pass gets at least this (in priority order) or is skipped
    compile_backend: str = "inductor"   # 'eager' (dynamo only): a cheap check of the compile pass's code on CPU
    threads: int | None = None  # torch intra-op threads (None: torch's default)

    @classmethod
    def make(cls, quick: bool, device: str, compile_: bool | None, total_s: float | None, amp: bool = False) -> "Settings":
        if quick:
            return cls(True, device, amp=amp or device == "cuda", warmup=1, min_iters=2, max_iters=2, target_s=0.0, batch_cap=2,
                       train_warmup=1, train_iters=1, workers=(0, 1), pipeline_s=0.3, pipeline_max_batches=2,
                       compile=bool(compile_), total_s=total_s or 600.0, eager_s=total_s or 600.0, family_cap_s=120.0,
                       threads=1)      # a shared 2-core machine: two threads contend with the other jobs
        cpus = os.cpu_count() or 8
        total = total_s or 450.0
        return cls(False, device, amp=True, warmup=3, min_iters=5, max_iters=50, target_s=1.5, batch_cap=512,
                   train_warmup=2, train_iters=3, workers=tuple(sorted({0, max(1, cpus // 2), cpus})), pipeline_s=1.5,
                   pipeline_max_batches=200, compile=compile_ is not False, total_s=total, eager_s=0.56 * total,
                   family_cap_s=60.0 * total / 450.0)


# ---------------------------------------------------------------------------------------------- measurement helpers
class Budget:
    "Seconds left to a piece of work."
    def __init__(self, seconds: float): self.end = time.time() + seconds
    def left(self) -> float: return self.end - time.time()


class Record(dict):
    "A family's results; saved to `path` (JSON) after every change, so a stopped process leaves them behind."
    def __init__(self, path: Path | None = None, **kw):
        super().__init__(**kw); self.path = path

    def save(self):
        if self.path is None: return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self, indent=1, default=str)); os.replace(tmp, self.path)

    def error(self, where: str, exc: BaseException):
        self.setdefault("errors", []).append({"where": where, "error": f"{type(exc).__name__}: {exc}"[:2000],
                                              "traceback": traceback.format_exc(limit=6)[-3000:]})
        self.save()


@contextlib.contextmanager
def attempt(rec: Record, where: str):
    "Run a measurement; a failure is recorded under `where` and the run goes on."
    try:
        yield
    except Exception as e:                      # noqa: BLE001 - every failure is data here
        print(f"  [{where}] failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        rec.error(where, e)
    finally:
        free_memory()


def torch_mod():
    import torch
    return torch


def sync(device: str):
    if device == "cuda": torch_mod().cuda.synchronize()


def free_memory():
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized(): torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    torch = torch_mod()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def to_channels_last(model):
    "Conv3d weights channels_last_3d, Conv2d weights channels_last (a 5-D format cannot hold a 4-D tensor)."
    torch = torch_mod()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d): m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, torch.nn.Conv2d): m.to(memory_format=torch.channels_last)
    return model


def random_clip(shape: tuple, batch: int, device: str):
    "A (B, 3, T, H, W) clip on the device, channels-last (3D)."
    torch = torch_mod()
    return torch.randn((batch, *shape), device=device).contiguous(memory_format=torch.channels_last_3d)


def inference_call(model, clip, amp: bool, detector: bool):
    "One inference pass: the bare network (raw outputs) or the engine's detector call (detections)."
    torch = torch_mod()
    def run():
        with torch.no_grad(), torch.autocast(clip.device.type, dtype=torch.bfloat16, enabled=amp):
            return model({"clip": clip}) if detector else model(clip)
    return run


def time_calls(fn, s: Settings) -> dict:
    """The first call (cuDNN autotuning or compilation happen there), warm-up calls, then calls timed between
    synchronisations until `target_s` has gone by (at least `min_iters`, at most `max_iters`). When one pass is
    long (> 0.25 s) one warm-up pass and two timed ones suffice: the spread of long passes is small."""
    t0 = time.perf_counter(); fn(); sync(s.device); first = time.perf_counter() - t0
    long_pass = first > 0.25
    for _ in range(1 if long_pass else s.warmup - 1): fn()
    sync(s.device)
    times, least = [], min(2, s.min_iters) if long_pass else s.min_iters
    while len(times) < s.max_iters and (len(times) < least or sum(times) < s.target_s):
        t0 = time.perf_counter(); fn(); sync(s.device); times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "iters": len(times),
            "times_s": [round(t, 6) for t in times]}


def throughput(batch: int, timing: dict) -> dict:
    return {"batch": batch, "clips_per_s": batch / timing["median_s"], "ms_per_batch": 1000 * timing["median_s"], **timing}


# ---------------------------------------------------------------------------------------------- configs and models
def row_config(row: Row, s: Settings):
    "The engine config of a row (its tiny stand-in under --quick)."
    from vad_repro.engine.config import get_config
    if s.quick: return get_config(row.quick_config).replace(**row.quick_changes)
    return get_config(row.config)


def clip_shape(row: Row, cfg, s: Settings) -> tuple:
    "(3, T, H, W): T from the config, H × W the row's or the registry's measured square size."
    from vad_repro import models
    spec = models.spec(cfg.model)
    hw = row.quick_hw if s.quick else row.hw
    T = cfg.num_frames
    if hw is None:
        (example,) = spec.make_input(T, spec.size, 1)     # the registry's measured input
        return tuple(example.shape[1:])
    return (3, T, *hw)


def build_for_inference(cfg, num_classes: int, s: Settings):
    torch = torch_mod()
    from vad_repro.engine.config import build_model
    torch.manual_seed(0)
    model = build_model(cfg, num_classes).eval().to(s.device)
    return to_channels_last(model)


def set_cudnn(benchmark: bool):
    torch = torch_mod()
    torch.backends.cudnn.benchmark = benchmark


def search_largest_batch(model, shape: tuple, s: Settings, budget_s: float, t_one: float) -> dict:
    "Double the batch from 2 until it does not fit, fails, reaches the cap or the time budget; one pass each."
    end, fits, tried, limit, t_last = time.time() + budget_s, 1, [], "cap", t_one
    set_cudnn(False)                                  # heuristics: no autotuning workspace per trial
    b = 2
    while b <= s.batch_cap:
        if time.time() + 5 * (2 * t_last) + 1.0 > end: limit = "time budget"; break   # the next trial and its timing
        clip = None
        try:
            clip = random_clip(shape, b, s.device)
            t0 = time.perf_counter(); inference_call(model, clip, s.amp, False)(); sync(s.device)
            t_last = time.perf_counter() - t0
        except Exception as e:                        # noqa: BLE001
            limit = "out of memory" if is_oom(e) else f"error: {type(e).__name__}: {str(e)[:300]}"
            tried.append({"batch": b, "fits": False, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            break
        finally:
            del clip; free_memory()
        tried.append({"batch": b, "fits": True, "seconds": t_last}); fits = b; b *= 2
    set_cudnn(True)
    return {"largest": fits, "stopped_by": limit, "tried": tried}


# ---------------------------------------------------------------------------------------------- the eager pass
def measure_inference(fam: Family, rec: Record, s: Settings, budget: Budget):
    set_cudnn(True)
    main = fam.rows[0]
    cfg = row_config(main, s)
    shape = clip_shape(main, cfg, s)
    inf = rec.setdefault("inference", {})
    inf.update(config=cfg.name, model=cfg.model, clip=list(shape), num_classes=main.num_classes,
               precision="bf16 autocast" if s.amp else "float32", memory_format="channels-last (3D)",
               cudnn_benchmark=s.device == "cuda")
    t0 = time.time()
    model = build_for_inference(cfg, main.num_classes, s)
    inf["build_s"] = time.time() - t0
    inf["parameters_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    rec.save()
    net, det = inf.setdefault("network", {}), inf.setdefault("detector", {})
    batches = [1] + ([main.paper.batch] if main.paper and main.paper.batch != 1 and not s.quick else [])
    for b in batches:
        with attempt(rec, f"inference batch {b}"):
            clip = random_clip(shape, b, s.device)
            net[str(b)] = throughput(b, time_calls(inference_call(model, clip, s.amp, False), s)); rec.save()
            det[str(b)] = throughput(b, time_calls(inference_call(model, clip, s.amp, True), s)); rec.save()
            print(f"  inference b={b}: network {net[str(b)]['clips_per_s']:.2f} clips/s, "
                  f"detector {det[str(b)]['clips_per_s']:.2f} clips/s", flush=True)
            del clip
    with attempt(rec, "largest batch"):
        t_one = net["1"]["median_s"] if "1" in net else 1.0
        reserve = 12.0 * (len(fam.rows) - 1)          # the other inputs' batch-1 timings come after
        search = search_largest_batch(model, shape, s, budget.left() - reserve, t_one)
        inf["search"] = search; rec.save()
        b = search["largest"]
        while b >= 1 and str(b) not in net:
            try:
                clip = random_clip(shape, b, s.device)
                net[str(b)] = throughput(b, time_calls(inference_call(model, clip, s.amp, False), s))
                break
            except Exception as e:                    # noqa: BLE001
                if not is_oom(e) or b == 1: raise
                inf.setdefault("search_notes", []).append(f"batch {b} ran out of memory with cuDNN autotuning: halved")
                b //= 2
            finally:
                clip = None; free_memory()
        inf["largest_batch"] = b; rec.save()
        print(f"  inference largest batch {b} ({search['stopped_by']}): {net[str(b)]['clips_per_s']:.2f} clips/s", flush=True)
    del model; free_memory()
    for row in fam.rows[1:]:                          # the other paper inputs: batch 1, eager
        with attempt(rec, f"inference {row.label}"):
            if budget.left() < 8: raise TimeoutError("no time left in the family budget")
            rcfg = row_config(row, s)
            rshape = clip_shape(row, rcfg, s)
            m = build_for_inference(rcfg, row.num_classes, s)
            clip = random_clip(rshape, 1, s.device)
            extra = rec.setdefault("inference_other_inputs", {})
            extra[row.label] = {"config": rcfg.name, "model": rcfg.model, "clip": list(rshape),
                                "network": {"1": throughput(1, time_calls(inference_call(m, clip, s.amp, False), s))},
                                "detector": {"1": throughput(1, time_calls(inference_call(m, clip, s.amp, True), s))}}
            rec.save(); del m, clip


def wait_for_data(cfg, flags: dict, budget: Budget):
    "Wait for the background generator of this config's synthetic data (if one was started)."
    flag = flags.get(f"{cfg.data_format}-{cfg.synth_size}")
    if not flag: return
    while not Path(flag).exists():
        if budget.left() < 5: raise TimeoutError(f"synthetic {cfg.data_format} data not generated in time ({flag})")
        time.sleep(0.5)
    status = json.loads(Path(flag).read_text())
    if status.get("error"): raise RuntimeError(f"generating the synthetic {cfg.data_format} data failed: {status['error']}")


def measure_training(fam: Family, rec: Record, s: Settings, budget: Budget, flags: dict):
    torch = torch_mod()
    from vad_repro.engine.trainer import Trainer
    main = fam.rows[0]
    batch_size = 2 if s.quick else fam.train_batch
    cfg = row_config(main, s).replace(batch_size=batch_size, num_workers=min(2, os.cpu_count() or 1), eval_every=0)
    tr = rec.setdefault("train", {})
    tr.update(config=cfg.name, model=cfg.model, batch=batch_size, batch_source=fam.train_batch_source,
              precision="bf16 autocast" if (cfg.amp and s.device == "cuda") else "float32",
              data=f"synthetic {cfg.data_format} '{cfg.synth_size}', {cfg.num_frames} frames stride {cfg.stride}, "
                   f"size {cfg.size}, transforms {cfg.transforms or cfg.paper}")
    wait_for_data(cfg, flags, budget)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench_gpu_{fam.key}_"))   # never written: no fit(), no checkpoint
    rec.setdefault("_cleanup", []).append(str(run_dir))
    t0 = time.time()
    trainer = Trainer(cfg, run_dir, device=s.device, log=lambda msg: print(f"  trainer: {msg}", flush=True))
    tr["trainer_build_s"] = time.time() - t0
    tr["train_clips"] = len(trainer.train_set); tr["num_classes"] = trainer.train_set.num_classes
    t0 = time.time()
    batches = iter(trainer.loader())
    batch = next(batches)
    from vad_repro.engine.trainer import stop_workers
    stop_workers(batches)
    tr["first_batch_s"] = time.time() - t0
    tr["clip"] = list(batch["clip"].shape)
    rec.save()
    times, losses = [], []
    for i in range(s.train_warmup + s.train_iters):
        if i == s.train_warmup and s.device == "cuda":
            sync(s.device); torch.cuda.reset_peak_memory_stats()
        if i >= s.train_warmup and times and budget.left() < 3 * times[-1] + 5: break
        sync(s.device); t0 = time.perf_counter()
        record = trainer.train_step(batch)
        sync(s.device); dt = time.perf_counter() - t0
        if i < s.train_warmup: tr.setdefault("warmup_step_s", []).append(dt)
        else: times.append(dt)
        losses.append(record["loss"])
        tr["steps_timed"] = len(times); rec.save()
    if not times: raise TimeoutError("no timed training step fitted in the family budget")
    tr.update(step_s=statistics.median(times), times_s=times, clips_per_s=batch_size / statistics.median(times),
              loss_last=losses[-1], loss_terms=sorted(k for k in record if k.startswith("loss_")))
    if s.device == "cuda":
        tr["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        tr["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    else:
        import resource                              # CPU: the process's peak resident set so far (an upper bound)
        tr["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rec.save()
    print(f"  train step (batch {batch_size}): {tr['step_s']:.3f} s, {tr['clips_per_s']:.2f} clips/s"
          + (f", peak {tr['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in tr else ""), flush=True)
    return trainer


def measure_pipeline(trainer, rec: Record, s: Settings, budget: Budget):
    "The trainer's own DataLoader with N workers; clips/s after the first batch, batches moved to the device."
    from vad_repro.engine.trainer import stop_workers, to_device
    torch = torch_mod()
    pipe = rec.setdefault("pipeline", {"batch": trainer.cfg.batch_size, "by_workers": {}})
    base = trainer.cfg
    for n in s.workers:
        if budget.left() < s.pipeline_s + 1:
            pipe.setdefault("skipped", []).append(f"{n} workers: family time budget"); rec.save(); continue
        with attempt(rec, f"pipeline {n} workers"):
            trainer.cfg = base.replace(num_workers=n)
            t0 = time.perf_counter()
            batches = iter(trainer.loader())
            try:
                first = to_device(next(batches), torch.device(s.device)); sync(s.device)
                t_first = time.perf_counter() - t0
                clips, count, t1 = 0, 0, time.perf_counter()
                while time.perf_counter() - t1 < s.pipeline_s and count < s.pipeline_max_batches:
                    try: b = next(batches)
                    except StopIteration: break
                    b = to_device(b, torch.device(s.device)); sync(s.device)
                    clips += len(b["clip"]); count += 1
                elapsed = time.perf_counter() - t1
            finally:
                stop_workers(batches); trainer.cfg = base
            del first
            if not clips: raise RuntimeError(f"the loader gave only one batch ({len(trainer.train_set)} clips)")
            pipe["by_workers"][str(n)] = {"workers": n, "clips_per_s": clips / elapsed, "batches": count, "clips": clips,
                                          "seconds": elapsed, "first_batch_s": t_first}
            rec.save()
            print(f"  pipeline {n} workers: {clips / elapsed:.1f} clips/s ({count} batches)", flush=True)


def prepare(s: Settings):
    "Threads; the package imported; the objects of the imports frozen, so that `gc.collect()` takes ms, not ~0.5 s."
    if s.threads: torch_mod().set_num_threads(s.threads)
    from vad_repro import models
    import vad_repro.engine.trainer  # noqa: F401
    models.discover()
    gc.freeze()


def eager_pass(fam: Family, rec: Record, s: Settings, budget_s: float, flags: dict):
    prepare(s)
    budget = Budget(budget_s)
    rec.update(family=fam.key, label=fam.label, device_name=device_name(s.device), torch=torch_mod().__version__)
    rec.save()
    with attempt(rec, "inference"):                  # shares of the family budget: 55 % inference, then training,
        measure_inference(fam, rec, s, Budget(0.55 * budget.left()))      # the pipeline's windows reserved
    trainer = None
    with attempt(rec, "train"):
        set_cudnn(False)
        pipeline_reserve = (s.pipeline_s + 1.0) * len(s.workers)
        trainer = measure_training(fam, rec, s, Budget(max(10.0, budget.left() - pipeline_reserve)), flags)
    if trainer is not None:
        with attempt(rec, "pipeline"):
            measure_pipeline(trainer, rec, s, budget)
    del trainer                                       # (the trainer restores the deterministic setting itself); free_memory()
    for folder in rec.pop("_cleanup", []): shutil.rmtree(folder, ignore_errors=True)
    rec.save()


# ---------------------------------------------------------------------------------------------- the compile pass
def compile_pass(fam: Family, rec: Record, s: Settings, budget_s: float, batches: list[int]):
    torch = torch_mod()
    prepare(s)
    set_cudnn(True)
    budget = Budget(budget_s)
    main = fam.rows[0]
    cfg = row_config(main, s)
    shape = clip_shape(main, cfg, s)
    comp = rec.setdefault("compiled", {"by_batch": {}})
    comp["mode"] = f"torch.compile (backend {s.compile_backend}, default mode, dynamic=False), network forward"
    rec.save()
    model = build_for_inference(cfg, main.num_classes, s)
    compiled = torch.compile(model, backend=s.compile_backend, dynamic=False)
    for b in batches:
        if str(b) in comp["by_batch"]: continue
        with attempt(rec, f"compiled batch {b}"):
            done = [r["compile_s"] for r in comp["by_batch"].values()]
            need = 1.5 * max(done) + 10 if done else 10      # dynamic=False: a new batch size compiles again
            if budget.left() < need:
                raise TimeoutError(f"{budget.left():.0f} s left in the compile budget, a compilation took {max(done or [0]):.0f} s")
            clip = random_clip(shape, b, s.device)
            timing = time_calls(inference_call(compiled, clip, s.amp, False), s)
            r = throughput(b, timing)
            r["compile_s"] = max(0.0, timing["first_call_s"] - timing["median_s"])   # compilation, without its one pass
            comp["by_batch"][str(b)] = r; rec.save()
            print(f"  compiled b={b}: {r['clips_per_s']:.2f} clips/s (compile {r['compile_s']:.1f} s)", flush=True)
            del clip


# ---------------------------------------------------------------------------------------------- orchestration
def device_name(device: str) -> str:
    if device == "cuda": return torch_mod().cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    return f"{cpu} ({len(os.sched_getaffinity(0))} cores, CPU)"


def elapsed() -> float: return time.time() - START


def run_worker(a) -> int:
    "One family's pass in this process (`--worker`): results go to the --partial file as they come."
    s = Settings(**json.loads(a.settings))
    s.workers = tuple(s.workers)
    fam = next(f for f in FAMILIES if f.key == a.worker)
    rec = Record(Path(a.partial))
    if Path(a.partial).exists(): rec.update(json.loads(Path(a.partial).read_text()))
    budget = a.deadline - time.time() - 2.0           # the parent's deadline, less this process's imports
    if a.phase == "eager": eager_pass(fam, rec, s, budget, json.loads(a.flags))
    else: compile_pass(fam, rec, s, budget, [int(b) for b in a.batches.split(",")])
    return 0


def start_data_generation(families: list[Family], s: Settings, work: Path) -> tuple[dict, list]:
    "Background processes generating the synthetic data the configs read; flag files say when each is done."
    needed = {}
    for fam in families:
        cfg = row_config(fam.rows[0], s)
        needed[f"{cfg.data_format}-{cfg.synth_size}"] = (cfg.data_format, cfg.synth_size)
    flags, procs = {}, []
    for key, (fmt, size) in needed.items():
        flag = work / f"data-{key}.json"
        code = ("import json\nfrom vad_repro.data import synth\n"
                f"try: out = {{'root': str(synth.ensure({fmt!r}, {size!r}, seed=0))}}\n"
                "except Exception as e: out = {'error': repr(e)}\n"
                f"open({str(flag) + '.tmp'!r}, 'w').write(json.dumps(out))\n"
                f"import os; os.replace({str(flag) + '.tmp'!r}, {str(flag)!r})\n")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True))
        flags[key] = str(flag)
    return flags, procs


def run_isolated(fam: Family, phase: str, s: Settings, budget_s: float, work: Path, flags: dict,
                 batches: list[int] | None = None) -> dict:
    "The family's pass in a fresh process, stopped (with its process group) past its budget; its partial results."
    partial = work / f"{fam.key}.json"
    deadline = time.time() + budget_s                 # the worker's imports and CUDA start come out of its budget
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", fam.key, "--phase", phase,
           "--deadline", f"{deadline:.3f}", "--partial", str(partial), "--flags", json.dumps(flags),
           "--settings", json.dumps(dataclasses.asdict(s)), "--batches", ",".join(map(str, batches or [1]))]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        proc.wait(timeout=budget_s + 5)
        status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError): os.killpg(proc.pid, 9)
        proc.wait()
        status = f"stopped after its {budget_s:.0f} s budget"
    rec = json.loads(partial.read_text()) if partial.exists() else {}
    rec.setdefault("process", {})[phase] = status
    if status != "exit 0":
        rec.setdefault("errors", []).append({"where": f"{phase} pass", "error": f"worker process: {status}"})
    partial.write_text(json.dumps(rec, indent=1, default=str))
    return rec


def run_in_process(fam: Family, phase: str, s: Settings, budget_s: float, work: Path, flags: dict,
                   batches: list[int] | None = None, previous: dict | None = None) -> dict:
    rec = Record(work / f"{fam.key}.json", **(previous or {}))
    with attempt(rec, f"{phase} pass"):
        if phase == "eager": eager_pass(fam, rec, s, budget_s, flags)
        else: compile_pass(fam, rec, s, budget_s, batches or [1])
    return dict(rec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny models, batches 1-2, 2-3 iterations")
    p.add_argument("--out", help="output folder (default: results/ on CUDA; required or a temp folder with --quick on CPU)")
    p.add_argument("--families", default=",".join(FAMILY_KEYS), help=f"comma-separated subset of {FAMILY_KEYS}")
    p.add_argument("--isolate", choices=("process", "none"), help="a process per family and pass (default on CUDA) or none")
    p.add_argument("--compile", dest="compile_", action="store_true", default=None, help="also compile under --quick")
    p.add_argument("--no-compile", dest="compile_", action="store_false")
    p.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)   # 'eager': a CPU check of the pass
    p.add_argument("--amp", action="store_true", help="bf16 autocast in inference also on CPU (the dtype path CUDA takes)")
    p.add_argument("--total-s", type=float, help="deadline of the whole run in seconds (default 450; --quick 600)")
    for hidden in ("--worker", "--phase", "--partial", "--flags", "--settings", "--batches"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return run_worker(a)

    import torch
    cuda = torch.cuda.is_available()
    if not cuda and not a.quick:
        print("bench_gpu.py: no CUDA device. This benchmark measures GPUs; on a CPU run the smoke test instead:\n"
              "    python tests/bench/bench_gpu.py --quick --out /tmp/gpu_bench_quick", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    if a.out: out = Path(a.out)
    elif cuda and not a.quick: out = RESULTS
    else:
        out = Path(tempfile.mkdtemp(prefix="gpu_bench_quick_"))
        print(f"--quick on CPU without --out: writing to {out}", flush=True)
    if not (cuda and not a.quick) and out.resolve() == RESULTS.resolve():
        print(f"bench_gpu.py: refusing to write {'--quick' if a.quick else 'CPU'} numbers into {RESULTS} "
              "(the committed GPU results); pass another --out", file=sys.stderr)
        return 2
    keys = [k.strip() for k in a.families.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(FAMILY_KEYS))
    if unknown:
        print(f"bench_gpu.py: unknown families {unknown}; choose from {list(FAMILY_KEYS)}", file=sys.stderr); return 2
    families = [f for f in FAMILIES if f.key in keys]
    s = Settings.make(a.quick, device, a.compile_, a.total_s, a.amp)
    s.compile_backend = a.compile_backend
    isolate = a.isolate or ("none" if a.quick else "process")
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_work_"))
    runner = run_isolated if isolate == "process" else run_in_process
    run = {"device": device, "quick": s.quick, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
           "host_cpus": os.cpu_count(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "load_average_before": os.getloadavg(), "isolate": isolate, "settings": dataclasses.asdict(s),
           "command": " ".join([Path(sys.executable).name, *sys.argv])}
    print(f"bench_gpu: {device}, {len(families)} families, results into {out}; estimated time: at most {s.total_s:.0f} s "
          f"(the eager pass about {min(s.eager_s, s.family_cap_s * len(families)):.0f} s, the compile pass what is left)",
          flush=True)
    flags, generators = start_data_generation(families, s, work) if isolate == "process" else ({}, [])
    results: dict[str, dict] = {}
    try:
        for i, fam in enumerate(families):                       # the eager pass: inference, training, pipeline
            left = s.eager_s - elapsed()
            budget = min(s.family_cap_s, left / (len(families) - i))
            print(f"[{elapsed():6.1f} s] {fam.key}: eager pass, budget {budget:.0f} s", flush=True)
            if budget < 15:
                results[fam.key] = {"family": fam.key, "label": fam.label,
                                    "errors": [{"where": "eager pass", "error": "skipped: no time left before the deadline"}]}
                continue
            results[fam.key] = runner(fam, "eager", s, budget, work, flags)
            write_outputs(out, run, results, families)
            print(f"[{elapsed():6.1f} s] {fam.key}: eager pass done", flush=True)
        ordered = sorted(families, key=lambda f: COMPILE_PRIORITY.index(f.key))
        for i, fam in enumerate(ordered):                        # the compile pass, with what is left, by priority
            if not s.compile: break
            left = s.total_s - 15 - elapsed()
            budget = min(left, max(s.compile_min_s, left / (len(ordered) - i)))
            largest = results[fam.key].get("inference", {}).get("largest_batch")
            batches = sorted({1, *([largest] if largest else [])})
            if budget < 30:
                results[fam.key].setdefault("compiled", {})["skipped"] = (
                    f"only {max(left, 0):.0f} s left before the {s.total_s:.0f} s deadline (--total-s gives more)")
                continue
            print(f"[{elapsed():6.1f} s] {fam.key}: compile pass at batches {batches}, budget {budget:.0f} s", flush=True)
            results[fam.key] = runner(fam, "compile", s, budget, work, flags, batches, **(
                {"previous": results[fam.key]} if runner is run_in_process else {}))
            write_outputs(out, run, results, families)
    finally:
        for g in generators:
            if g.poll() is None:
                with contextlib.suppress(ProcessLookupError): os.killpg(g.pid, 9)
                g.wait()
    if not s.compile:
        for fam in families:
            results.setdefault(fam.key, {}).setdefault("compiled", {})["skipped"] = (
                "--quick: compilation is not cheap on CPU (pass --compile)" if s.quick else "--no-compile")
    for r in results.values():                           # a stopped worker's trainer folders
        for folder in r.pop("_cleanup", []): shutil.rmtree(folder, ignore_errors=True)
    run["load_average_after"] = os.getloadavg()
    run["elapsed_s"] = elapsed()
    write_outputs(out, run, results, families)
    shutil.rmtree(work, ignore_errors=True)
    print(f"[{elapsed():6.1f} s] done: {out / 'gpu_bench.json'}, {out / 'gpu_bench.md'}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- outputs
def paper_comparison(fam: Family, rec: dict) -> list[dict]:
    "The papers' speed figures beside ours at the same batch (eager network forward, and the detector call)."
    rows = []
    for i, row in enumerate(fam.rows):
        if row.paper is None: continue
        inf = rec.get("inference", {}) if i == 0 else rec.get("inference_other_inputs", {}).get(row.label, {})
        key = str(row.paper.batch)
        net, det = inf.get("network", {}).get(key), inf.get("detector", {}).get(key)
        comp = rec.get("compiled", {}).get("by_batch", {}).get(key) if i == 0 else None
        def ours(r):
            if r is None: return None
            return r["clips_per_s"] if row.paper.unit == "fps" else r["ms_per_batch"] / row.paper.batch
        def ratio(v):      # > 1: ours faster
            if v is None: return None
            return v / row.paper.value if row.paper.unit == "fps" else row.paper.value / v
        rows.append({"family": fam.key, "input": row.label, "source": row.paper.source, "paper": row.paper.value,
                     "unit": row.paper.unit, "batch": row.paper.batch, "paper_hardware": row.paper.hardware,
                     "ours_network": ours(net), "ours_detector": ours(det), "ours_compiled": ours(comp),
                     "speedup_network": ratio(ours(net)), "speedup_detector": ratio(ours(det)),
                     "speedup_compiled": ratio(ours(comp)), "hardware_differs": True})
    return rows


def _f(v, fmt="{:.2f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)): return ""
    return fmt.format(v)


def write_outputs(out: Path, run: dict, results: dict, families: list[Family]):
    out.mkdir(parents=True, exist_ok=True)
    names = [r.get("device_name") for r in results.values() if r.get("device_name")]
    run["device_name"] = names[0] if names else device_name(run["device"])
    comparison = [c for fam in families if fam.key in results for c in paper_comparison(fam, results[fam.key])]
    data = {**run, "families": results, "paper_comparison": comparison}
    (out / "gpu_bench.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    L = [f"# GPU benchmark: the four detector families at their papers' inputs", "",
         f"Device: {run['device_name']}",
         f"torch {run['torch']}" + (f", CUDA {run['cuda']}, cuDNN {run['cudnn']}" if run.get("cuda") and run["device"] == "cuda" else "")
         + f"; {run['host_cpus']} host CPUs; started {run['started']}"
         + (f"; elapsed {run['elapsed_s']:.0f} s" if "elapsed_s" in run else " (in progress)")
         + f"; load average {run['load_average_before'][0]:.2f}"
         + (f" → {run['load_average_after'][0]:.2f}" if "load_average_after" in run else ""),
         f"Command: `{run['command']}`" + (" (**--quick: tiny CPU stand-ins, not the paper models**)" if run["quick"] else ""),
         "", f"## Inference (clips/s; {'bf16 autocast' if run['settings']['amp'] else 'float32'}, channels-last, "
             "random weights and clips)", "",
         "Network: the bare-tensor forward (raw outputs); detector: the engine's `model({'clip': x})` with decoding "
         "and NMS; compiled: the network under `torch.compile`, its compile time apart.", "",
         "| family | model | clip (3, T, H, W) | network b=1 | detector b=1 | paper batch: network / detector "
         "| largest batch (stopped by) | network there | compiled b=1 | compiled largest | compile s (b=1 / largest) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam in families:
        r = results.get(fam.key, {}); inf = r.get("inference", {})
        net, det = inf.get("network", {}), inf.get("detector", {})
        comp = r.get("compiled", {}).get("by_batch", {})
        big = inf.get("largest_batch"); pb = fam.rows[0].paper.batch if fam.rows[0].paper else None
        stop = inf.get("search", {}).get("stopped_by", "")
        g = lambda d, b, k="clips_per_s": d.get(str(b), {}).get(k) if b else None
        L.append(f"| {fam.key} | {inf.get('model', '')} | {inf.get('clip', '')} | {_f(g(net, 1))} | {_f(g(det, 1))} | "
                 + (f"{pb}: {_f(g(net, pb))} / {_f(g(det, pb))}" if pb and pb != 1 and str(pb) in net else "") + " | "
                 + (f"{big} ({stop})" if big else "") + f" | {_f(g(net, big))} | {_f(g(comp, 1))} | {_f(g(comp, big))} | "
                 + " / ".join(_f(g(comp, b, "compile_s"), "{:.0f}") for b in (1, big) if b and str(b) in comp) + " |")
    other = [(fam.key, lbl, o) for fam in families for lbl, o in results.get(fam.key, {}).get("inference_other_inputs", {}).items()]
    for key, lbl, o in other:
        L.append(f"| {key}, {lbl} | {o['model']} | {o['clip']} | {_f(o['network']['1']['clips_per_s'])} | "
                 f"{_f(o['detector']['1']['clips_per_s'])} | | | | | | |")
    L += ["", "## The papers' figures beside ours (different hardware)", "",
          "Same batch as the paper; fps = clips/s (one clip per key frame), ms = per clip (a CQ tube). "
          f"Speed-up: ours over the paper's (> 1: ours faster): our {run['device_name']} against their hardware, "
          "so it compares machines as much as implementations.", ""]
    if run["quick"]: L += ["**--quick: tiny CPU stand-ins for the paper models, so these ratios mean nothing.**", ""]
    L += [
          "| figure | paper | paper hardware | ours: network | detector | compiled | speed-up network / detector / compiled |",
          "|---|---|---|---|---|---|---|"]
    for c in comparison:
        u = c["unit"]
        L.append(f"| {c['source']} (batch {c['batch']}) | {c['paper']:g} {u} | {c['paper_hardware']} | "
                 f"{_f(c['ours_network'])} {u if c['ours_network'] is not None else ''} | {_f(c['ours_detector'])} | "
                 f"{_f(c['ours_compiled'])} | " + " / ".join(_f(c[k], "{:.2f}×") or "–" for k in
                                                            ("speedup_network", "speedup_detector", "speedup_compiled")) + " |")
    L += ["", "## One training step (the engine's Trainer.train_step at the paper's per-GPU batch)", "",
          "As a real run: the trainer's deterministic algorithms (warn only) with cuDNN autotuning off, the batch "
          "moved to the device inside the step; peak memory after the warm-up steps (optimizer state included).", "",
          "| family | config | batch (source) | clip | step s | clips/s | peak memory GiB | precision |", "|---|---|---|---|---|---|---|---|"]
    for fam in families:
        t = results.get(fam.key, {}).get("train", {})
        mem = t.get("peak_memory_gib")
        L.append(f"| {fam.key} | {t.get('config', '')} | {t.get('batch', '')} ({fam.train_batch_source}) | {t.get('clip', '')} | "
                 f"{_f(t.get('step_s'), '{:.3f}')} | {_f(t.get('clips_per_s'))} | "
                 + (_f(mem) if mem is not None else (f"(CPU peak RSS {_f(t.get('peak_rss_gib'))})" if "peak_rss_gib" in t else ""))
                 + f" | {t.get('precision', '')} |")
    L += ["", "## Input pipeline (the trainer's DataLoader over the synthetic data, 112² frames)", "",
          "Does it keep the GPU fed? Pipeline clips/s against the training step's and the inference's clips/s.", "",
          "| family | batch | workers: clips/s | best / training clips/s | best / inference clips/s (largest batch) |",
          "|---|---|---|---|---|"]
    for fam in families:
        r = results.get(fam.key, {}); pipe = r.get("pipeline", {})
        by = pipe.get("by_workers", {})
        best = max((v["clips_per_s"] for v in by.values()), default=None)
        train = r.get("train", {}).get("clips_per_s")
        inf = r.get("inference", {}); big = inf.get("largest_batch")
        infer = inf.get("network", {}).get(str(big), {}).get("clips_per_s") if big else None
        L.append(f"| {fam.key} | {pipe.get('batch', '')} | " + ", ".join(f"{n}: {_f(v['clips_per_s'], '{:.1f}')}" for n, v in by.items())
                 + f" | {_f(best / train if best and train else None)} | {_f(best / infer if best and infer else None)} |")
    errors = [(k, e) for k, r in results.items() for e in r.get("errors", [])]
    skipped = [(k, r["compiled"]["skipped"]) for k, r in results.items() if r.get("compiled", {}).get("skipped")]
    if errors or skipped:
        L += ["", "## Failures and skipped measurements", ""]
        L += [f"- {k}, {e['where']}: {e['error'][:400]}" for k, e in errors]
        L += [f"- {k}, compiled: skipped ({why})" for k, why in skipped]
    (out / "gpu_bench.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
