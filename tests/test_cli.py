"""The installed `vad-repro` console script, run as a user runs it (a subprocess).

Damaged videos are made in the tests from the real footage in `../shared/data/real_videos/` (next to the
repository), or `$VAD_REPRO_REAL_VIDEOS`.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vad_repro.cli import SUBCOMMANDS, resolve

EXE = shutil.which("vad-repro")


def run(*args, timeout=300):
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "vad_repro.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_console_script_is_installed():
    assert EXE, "`vad-repro` is not on PATH: is the package installed (pip install -e .)?"


def test_top_level_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for name in SUBCOMMANDS:
        assert f"  {name} " in r.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name):
    r = run(name, "--help")
    assert r.returncode == 0, r.stderr
    assert f"vad-repro {name}" in r.stdout
    if name == "detect":                                               # the status of a damaged video is documented
        assert "4 a damaged video" in r.stdout and "2 bad usage" in r.stdout, r.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_unfinished_subcommand_exits_2(name):
    if resolve(name) is not None:
        pytest.skip(f"{name} is implemented")
    r = run(name)
    assert r.returncode == 2 and "not implemented yet" in r.stderr


def test_unknown_subcommand():
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr


def test_flops_list_and_unknown_name():
    r = run("flops", "--list")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert names == sorted(names) and len(names) == len(set(names))
    r = run("flops", "no_such_model_xyz")
    assert r.returncode == 2 and "unknown model" in r.stderr


def test_flops_json_on_a_registered_model():
    # the engine's minimal detector: cheap to build and count, registered at 8x64x64
    r = run("flops", "minimal_detector", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"name", "frames", "size", "gflops", "mparams"}
    assert (out["name"], out["frames"], out["size"]) == ("minimal_detector", 8, 64)
    assert out["gflops"] > 0 and out["mparams"] > 0
    r = run("flops", "minimal_detector", "--json", "--size", "128")   # 4x the pixels, 4x the flops
    assert abs(json.loads(r.stdout)["gflops"] / out["gflops"] - 4) < 1e-6


def test_tables_unknown_paper():
    r = run("tables", "no_such_paper", "--out", "/tmp/vad_repro_tables_test")
    assert r.returncode == 2 and "no tables for" in r.stderr


# ---------------------------------------------------------------- damaged videos (issue 15)
REAL = Path(os.environ.get("VAD_REPRO_REAL_VIDEOS", Path(__file__).resolve().parents[2] / "shared/data/real_videos"))
GOLF = REAL / "golfswing.mp4"                                        # 190 frames, 25 fps, 298x224, index at the end


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    "Damaged copies of the real `golfswing.mp4`, made here, and a checkpoint whose detector finds an actor everywhere."
    import numpy as np
    import torch
    from dataclasses import asdict
    from vad_repro.data.decode import remux_faststart
    from vad_repro.engine.checkpoint import save_checkpoint
    from vad_repro.engine.config import build_model, get_config
    d = tmp_path_factory.mktemp("damaged")
    data = GOLF.read_bytes()
    fast = remux_faststart(GOLF, d / "golf_fast.mp4").read_bytes()    # the same packets, index in front
    (d / "golf_fast_half.mp4").write_bytes(fast[: len(fast) // 2])    # opens, then ends early
    garbled = bytearray(data)
    garbled[len(data) // 2: len(data) // 2 + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (d / "golf_garbled.mp4").write_bytes(bytes(garbled))
    (d / "notes.mp4").write_text("meeting notes, not a video\n")
    cfg = get_config("minimal_tiny")
    model = build_model(cfg, num_classes=3)
    with torch.no_grad(): model.head[-1].bias[0] = 6.0               # actor logit: sigma(6) ~ 1 in every cell
    ckpt = save_checkpoint(d / "ckpt", 1, {"model": model.state_dict(), "ema": None, "config": asdict(cfg), "num_classes": 3,
                                           "class_names": ["swing", "stand", "sit"], "action_ids": [1, 2, 4]})
    return d, ckpt


def detect(video: Path, out: Path, ckpt: Path):
    return run("detect", str(video), "--config", "minimal_tiny", "--checkpoint", str(ckpt), "--out", str(out),
               "--min-score", "0.3", "--device", "cpu")


@pytest.mark.parametrize("name, why", [("golf_fast_half.mp4", "the stream ends there but the container has 190 frames"),
                                       ("golf_garbled.mp4", "Invalid data found when processing input")])
def test_detect_on_a_damaged_video_keeps_the_frames_before(damaged, tmp_path, name, why):
    import av
    from vad_repro.evaluation.ava import read_ava_csv
    d, ckpt = damaged
    out = tmp_path / "out"
    r = detect(d / name, out, ckpt)
    assert r.returncode == 4, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    m = re.fullmatch(rf"vad-repro detect: {re.escape(str(d / name))}: decoding failed at frame (\d+) \((.*)\); "
                     rf"wrote detections for frames 0–(\d+) to {re.escape(str(out / 'detections.csv'))} and "
                     rf"{re.escape(str(out / 'annotated.mp4'))}", lines[0])
    assert m and why in m.group(2), lines[0]
    failed = int(m.group(1))
    assert 0 < failed < 190 and int(m.group(3)) == failed - 1
    rows = read_ava_csv(out / "detections.csv")                       # valid AVA format, closed properly
    assert sorted(set(rows.timestamp.tolist())) == [k / 25 for k in range(0, failed, 25)]   # every key frame decoded
    with av.open(str(out / "annotated.mp4")) as c:                    # a finished mp4 with every decoded frame
        assert sum(1 for _ in c.decode(c.streams.video[0])) == failed


def test_detect_on_a_file_that_is_not_a_video(damaged, tmp_path):
    "(The real video cut at half its bytes, with its index at the end, fails the same way: notebook 10.)"
    d, ckpt = damaged
    name = "notes.mp4"
    r = detect(d / name, tmp_path / "out", ckpt)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [f"vad-repro detect: {d / name}: cannot open video "
                                             f"(Invalid data found when processing input)"], r.stderr[-3000:]
    assert not (tmp_path / "out").exists()                           # nothing written


def _ava_root(root: Path, damaged_dir: Path) -> Path:
    "AVA-format train split: the real golf swing (key frames 60-180) and its cut copy (60-150; 90, 120, 150 unreadable)."
    (root / "annotations").mkdir(parents=True); (root / "videos").mkdir()
    shutil.copy(GOLF, root / "videos" / "golf.mp4")
    shutil.copy(damaged_dir / "golf_fast_half.mp4", root / "videos" / "golf_half.mp4")
    (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text('item {\n name: "swing"\n id: 1\n}\n')
    (root / "annotations" / "ava_train_v2.2.csv").write_text("".join(
        f"{v},{ts},0.2,0.1,0.7,0.9,1,0\n" for v, n in (("golf", 5), ("golf_half", 4)) for ts in range(902, 902 + n)))
    return root


def test_train_on_a_damaged_video_stops_or_skips_and_counts(damaged, tmp_path):
    root = _ava_root(tmp_path / "data", damaged[0])
    args = ["train", "--config", "minimal_tiny", "--data", str(root), "--set", "val_split='train'",
            "--max-steps", "4", "--ckpt-every", "4", "--batch-size", "4"]
    strict = run(*args, "--out", str(tmp_path / "strict"), "--no-eval")
    assert strict.returncode == 4, strict.stderr[-3000:]
    last = strict.stderr.strip().splitlines()[-1]
    assert "Traceback" not in strict.stderr and last.startswith("vad-repro train: ") and "golf_half.mp4: frames [" in last, \
        strict.stderr[-3000:]
    run_dir = tmp_path / "skip"
    r = run(*args, "--out", str(run_dir), "--skip-bad")                # evaluates on the same clips at the end
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    counted = sum(rec.get("skipped", 0) for rec in records)
    reasons = [s for rec in records for s in rec.get("skipped_samples", [])]
    assert counted == len(reasons) > 0 and all("golf_half.mp4: frames [" in s for s in reasons), records
    assert f"train_skipped={counted}" in r.stdout and f"the run: {counted} samples skipped" in r.stderr, (r.stdout, r.stderr)
    evaluation = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    assert evaluation["skipped"] == 3 and all("golf_half.mp4" in s for s in evaluation["skipped_samples"]), evaluation
    assert json.loads((run_dir / "config.json").read_text())["skip_bad"] is True   # `evaluate run RUN` skips alike
