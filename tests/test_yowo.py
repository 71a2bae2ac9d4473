"""YOWO (issue 6): official checkpoint import, CFAM and loss hand cases, every registered variant, the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vad_repro import models
from vad_repro.backbones.darknet import Darknet, load_darknet_weights, save_darknet_weights
from vad_repro.backbones.efficient3d import load_kinetics_checkpoint, shufflenet_v2
from vad_repro.yowo import YOWO, YOWODetector
from vad_repro.yowo.cfam import CFAM, ChannelAttention
from vad_repro.losses import weighted_sum
from vad_repro.yowo.loss import RegionLossConfig, decode_detections, region_loss
from vad_repro.yowo.model import YOWOConfig, official_to_ours

FIXTURE = Path(__file__).parent / "fixtures" / "yowo_official_state_dict_ucf24_resnext101.json"


@pytest.fixture(scope="module")
def official_state_dict():
    "Random tensors with every name and shape of the released UCF101-24 YOWO checkpoint."
    g = torch.Generator().manual_seed(0)
    entries = json.loads(FIXTURE.read_text())["state_dict"]
    return {k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g) for k, s in entries}


def test_from_official_every_tensor_lands(official_state_dict):
    # saved from nn.DataParallel: every key carries the `module.` prefix
    det = YOWODetector.from_official({"state_dict": {"module." + k: v for k, v in official_state_dict.items()}},
                                     num_classes=24, backbone_3d="resnext101")
    ours = det.state_dict()
    assert len(ours) == len(official_state_dict) == 780
    for k, v in official_state_dict.items():
        assert torch.equal(ours[official_to_ours(k)], v), k
    assert isinstance(det, YOWO) and official_to_ours("cfam.sc.gamma") == "fusion.sc.gamma"


def test_from_official_lists_unmatched_and_missing(official_state_dict):
    bad = dict(official_state_dict)
    bad.pop("backbone_2d.models.30.conv23.bias")
    bad["cfam.unknown"] = torch.zeros(2)
    with pytest.raises(KeyError) as e, torch.device("meta"):      # the check runs before any tensor is copied
        YOWO.from_official(bad, num_classes=24)
    assert "missing (not in the checkpoint) (1): ['backbone_2d.models.30.conv23.bias']" in str(e.value)
    assert "leftover (not in the model) (1): ['fusion.unknown']" in str(e.value)


def test_cfam_alpha_zero_is_the_b_path_and_gram_softmax():
    B_map = torch.tensor([[1., 0.], [0., 1.]]).view(1, 2, 1, 2)
    att = ChannelAttention("paper")
    with torch.no_grad():
        assert torch.equal(att(B_map), B_map)
        M = att.attention_map(B_map.view(1, 2, 2))[0]
        e = math.e
        assert torch.allclose(M, torch.tensor([[e, 1.], [1., e]]) / (e + 1))
        att.gamma.fill_(2.0)
        assert torch.allclose(att(B_map).view(2, 2), torch.eye(2) + 2 * M)
    cfam = CFAM(10, 6, inter_channels=8).eval()
    assert cfam(torch.randn(3, 10, 4, 5)).shape == (3, 6, 4, 5)


def test_region_loss_hand_case():
    cfg = RegionLossConfig(num_classes=2, anchors=((1., 1.), (2., 2.)))
    L = region_loss(torch.zeros(1, 14, 2, 2), [torch.tensor([[0.55, 0.05, 1.05, 0.55]])], [torch.tensor([[0., 1.]])], cfg)
    iou = 0.81 / 1.19
    assert math.isclose(L["loss_x"].item(), 0.005, rel_tol=1e-5) and math.isclose(L["loss_y"].item(), 0.005, rel_tol=1e-5)
    assert abs(L["loss_w"].item()) < 1e-9 and abs(L["loss_h"].item()) < 1e-9
    assert math.isclose(L["loss_conf"].item(), 7 * 0.25 + 5 * (0.5 - iou) ** 2, rel_tol=1e-5)
    assert math.isclose(L["loss_cls"].item(), 0.25 * math.log(2), rel_tol=1e-5)
    total = weighted_sum(L, cfg.loss_weights)       # eq. 11: λ = ½ on every detection term, 1 on the class term
    assert math.isclose(total.item(), 0.5 * (2 * 0.005 + 7 * 0.25 + 5 * (0.5 - iou) ** 2) + 0.25 * math.log(2), rel_tol=1e-5)


def test_decode_keeps_confident_box_and_suppresses_duplicate():
    out = torch.full((1, 14, 2, 2), -10.)
    out[:, 0:4] = 0.; out[:, 7:11] = 0.
    out[0, 4, 0, 1] = 3.0; out[0, 6, 0, 1] = 2.0; out[0, 5, 0, 1] = 0.0; out[0, 11, 0, 1] = 1.0
    dets = decode_detections(out, ((1., 1.), (1.2, 1.2)), 2, conf_thresh=0.25, nms_thresh=0.4)
    assert dets[0]["boxes"].tolist() == [[0.5, 0.0, 1.0, 0.5]]


def test_checkpoint_loaders_round_trip(tmp_path):
    src, dst = shufflenet_v2(), shufflenet_v2()
    head = {"module.classifier.1.weight": torch.zeros(600, 2048), "module.classifier.1.bias": torch.zeros(600)}
    torch.save({"state_dict": {"module." + k: v + 1 for k, v in src.state_dict().items()} | head}, tmp_path / "k.pth")
    assert load_kinetics_checkpoint(dst, tmp_path / "k.pth")["dropped"] == ["classifier.1.bias", "classifier.1.weight"]
    assert torch.equal(dst.conv1[0].weight, src.conv1[0].weight + 1)
    a, b = Darknet([("conv", 4, 3), ("max",), ("linear", 3, 1)]), Darknet([("conv", 4, 3), ("max",), ("linear", 3, 1)])
    save_darknet_weights(a, tmp_path / "t.weights", seen=5)
    assert load_darknet_weights(b, tmp_path / "t.weights") == {"version": (0, 2, 0), "seen": 5, "convs_loaded": 2}
    assert torch.equal(a.models[2][0].weight, b.models[2][0].weight)


YOWO_NAMES = models.names("yowo")
BIG = {"resnext101", "resnet101"}


def test_every_variant_is_registered():
    assert len(YOWO_NAMES) == 26
    for n in ("yowo_resnext101_16f", "yowo_resnext101_8f", "yowo_resnext101_32f", "yowo_2d_8f", "yowo_3d_8f", "yowo_concat_8f", "yowo_tiny",
              "yowo_2d_darknet19") + tuple(f"yowo_3d_{b}" for b in ("resnext101", "resnet18", "shufflenetv1", "mobilenetv2")):
        assert n in YOWO_NAMES, n


@pytest.mark.parametrize("name", YOWO_NAMES)
def test_variant_shapes(name):
    """Every registered variant at a small input (64², the registered clip length), built and run on the
    meta device: the real modules propagate shapes without allocating or computing (fast enough for CI).
    Raw head map (B, 5·(C+5), S/32, S/32), or the branch's own map for the backbone-only rows."""
    if any(b in name for b in BIG) and name not in ("yowo_resnext101_16f", "yowo_3d_resnext101", "yowo_3d_resnet101"):
        pytest.skip("same ResNe(X)t-101 trunk as yowo_resnext101_16f / yowo_3d_resnet101 (checked there)")
    spec = models.spec(name)
    with torch.device("meta"):
        model = models.build(name).eval()
        (x,) = spec.make_input(spec.frames, 64, 1)
        y = model(x)
    if name.startswith("yowo_3d_") and not name.endswith("_8f"):
        assert y.shape[0] == 1 and y.shape[2:] == (2, 2)          # the 3D backbone alone
    elif name == "yowo_2d_darknet19":
        assert y.shape == (1, 425, 2, 2)
    else:
        assert isinstance(model, YOWODetector)
        assert y.shape == (1, 5 * (24 + 5), 2, 2)


def test_tiny_trains_one_step():
    det = models.build("yowo_tiny", num_classes=3)
    batch = {"clip": torch.randn(2, 3, 8, 64, 64), "boxes": [torch.tensor([[0.1, 0.1, 0.6, 0.9]]), torch.zeros(0, 4)],
             "labels": [torch.tensor([[0., 0., 1.]]), torch.zeros(0, 3)], "meta": [{}, {}]}
    losses = det.train()(batch)
    weighted_sum(losses, det.loss_weights).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    dets = det.eval()(batch)
    assert len(dets) == 2 and all(d["scores"].shape[1:] == (3,) for d in dets)


def test_cli_flops_in_process(capsys):
    from vad_repro.cli import main
    assert main(["flops", "yowo_tiny", "--frames", "4", "--size", "64", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["name"], r["frames"], r["size"], r["convention"]) == ("yowo_tiny", 4, 64, "fvcore")
    assert 0 < r["gflops"] < 1 and 0 < r["mparams"] < 10


def test_train_cpu_runs_records_each_run_and_reports_failures(tmp_path):
    import json
    from vad_repro.yowo.results import cpu_records, train_cpu_runs
    runs, rec = tmp_path / "runs", tmp_path / "records"
    (r,) = train_cpu_runs(["yowo_tiny"], runs_dir=runs, out_dir=rec, jobs=1, extra=["--max-steps", "2"])
    assert (r["config"], r["model"], r["steps"], r["num_frames"]) == ("yowo_tiny", "yowo_tiny", 2, 8)
    assert 0.0 <= r["frame_mAP"] <= 1.0 and 0.0 <= r["chance_frame_mAP"] <= 1.0 and r["seconds"] > 0
    assert 0.0 <= r["actor_AP"] <= 1.0                                         # class-agnostic AP, recorded too
    assert json.loads((rec / "yowo_tiny.json").read_text())["frame_mAP"] == r["frame_mAP"]
    assert cpu_records(rec)["yowo_tiny"]["curve"][-1]["step"] == 2 and (rec / "yowo_tiny_loss.png").exists()
    with pytest.raises(FileExistsError, match="yowo_tiny"):          # never overwrites a run
        train_cpu_runs(["yowo_tiny"], runs_dir=runs, out_dir=rec, jobs=1)
    with pytest.raises(RuntimeError, match="train.log"):             # a failed run names its log
        train_cpu_runs(["yowo_tiny"], runs_dir=tmp_path / "bad", out_dir=rec, jobs=1, extra=["--set", "lr=fast"])


# ------------------------------------------- checkpoints in the official layout, through the command line (issue 15)
# wei-tim/YOWO's training script saves {"epoch", "state_dict" of an nn.DataParallel model ("module." names), "fscore"};
# `vad-repro detect`, `vad-repro evaluate run` and `vad-repro train --init model=FILE` take such a file as it is.
import os
import pickle
import shutil
import subprocess
import sys

from vad_repro.data.ucf_jhmdb import UCF101_24_CLASSES
from vad_repro.engine.config import get_config
from vad_repro.engine.inference import load_model
from vad_repro.yowo.model import to_official

REAL = Path(os.environ.get("VAD_REPRO_REAL_VIDEOS", Path(__file__).resolve().parents[2] / "shared/data/real_videos"))
GOLF = REAL / "golfswing.mp4"                                        # real UCF101 footage, 190 frames, 25 fps


def cli(*args, env=None):
    exe = shutil.which("vad-repro")
    cmd = [exe] if exe else [sys.executable, "-m", "vad_repro.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env)


def one_video_root(synthetic: Path, root: Path, frames: int = 12) -> Path:
    "A UCF-format root cut from the tiny synthetic set: one video, train and test, its first `frames` frames."
    with open(synthetic / "UCF101v2-GT.pkl", "rb") as f: gt = pickle.load(f, encoding="latin1")
    video = gt["test_videos"][0][0]
    tubes = {label: [t[t[:, 0] <= frames] for t in ts if (t[:, 0] <= frames).any()] for label, ts in gt["gttubes"][video].items()}
    (root / "rgb-images" / video.split("/")[0]).mkdir(parents=True)
    os.symlink(synthetic / "rgb-images" / video, root / "rgb-images" / video)
    with open(root / "UCF101v2-GT.pkl", "wb") as f:
        pickle.dump({"labels": gt["labels"], "nframes": {video: frames}, "resolution": {video: gt["resolution"][video]},
                     "gttubes": {video: tubes}, "train_videos": [[video]], "test_videos": [[video]]}, f)
    return root


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    "yowo_tiny's weights saved as the official code saves YOWO: 24 classes (UCF101-24) and 5 (the synthetic set)."
    from vad_repro.data import synth
    d, cache = tmp_path_factory.mktemp("official"), tmp_path_factory.mktemp("cache")
    env = {**os.environ, "VAD_REPRO_CACHE": str(cache), "OMP_NUM_THREADS": "1", "VAD_REPRO_WEIGHTS": ""}
    torch.manual_seed(0)
    out = {"dir": d, "env": env, "root": one_video_root(synth.ensure("ucf", "tiny", seed=0, cache_dir=cache), d / "ucf")}
    for C in (24, 5):
        model = models.build("yowo_tiny", num_classes=C, dataset="ucf").eval()
        out[C], out[f"model{C}"] = d / f"yowo_ucf101-24_16f_checkpoint_{C}.pth", model
        torch.save(to_official(model, epoch=7, fscore=0.42), out[C])
    out["mystery"] = d / "mystery.pth"
    torch.save({"weights": torch.zeros(1), "step": 3}, out["mystery"])
    out["kinetics"] = d / "resnext-101-kinetics.pth"                  # the same wrapper, another network
    torch.save({"epoch": 40, "arch": "resnext-101", "state_dict": {"module.conv1.weight": torch.zeros(64, 3, 7, 7, 7)}},
               out["kinetics"])
    return out


def test_official_checkpoint_loads_with_the_dataset_class_names(official):
    ck = torch.load(official[24], weights_only=False)
    assert set(ck) == {"epoch", "state_dict", "fscore"} and all(k.startswith("module.") for k in ck["state_dict"])
    model, info = load_model(get_config("yowo_tiny"), official[24], device="cpu")
    assert (info["num_classes"], info["class_names"]) == (24, list(UCF101_24_CLASSES))
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad(): assert torch.equal(model(clip), official["model24"](clip))


def test_released_resnext101_checkpoint_loads_under_its_config(tmp_path, official_state_dict):
    "The exact layout and names of the released UCF101-24 file (the fixture), under `yowo_resnext101_16f_ucf`."
    path = tmp_path / "yowo_ucf101-24_16f_checkpoint.pth"
    torch.save({"epoch": 5, "state_dict": {"module." + k: v for k, v in official_state_dict.items()}, "fscore": 0.8}, path)
    model, info = load_model(get_config("yowo_resnext101_16f_ucf"), path, device="cpu")
    assert (info["num_classes"], info["class_names"][8]) == (24, "GolfSwing")
    assert torch.equal(model.state_dict()["fusion.sc.gamma"], official_state_dict["cfam.sc.gamma"])


def test_detect_on_a_real_video_with_an_official_checkpoint(official, tmp_path):
    out = tmp_path / "det"
    r = cli("detect", GOLF, "--config", "yowo_tiny", "--checkpoint", official[24], "--out", out, "--device", "cpu",
            env=official["env"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "frames=190 key_frames=8" in r.stdout, r.stdout
    assert (out / "detections.csv").exists() and (out / "annotated.mp4").stat().st_size > 0


def in_process(monkeypatch, capsys, official, *args) -> tuple[int, str]:
    "`vad-repro ARGS` run in this process (no interpreter start-up): its exit status and stderr."
    from vad_repro.cli import main
    for k in ("VAD_REPRO_CACHE", "VAD_REPRO_WEIGHTS"): monkeypatch.setenv(k, official["env"][k])
    capsys.readouterr()
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_evaluate_run_on_an_official_checkpoint(official, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev"
    r = cli("evaluate", "run", "--config", "yowo_tiny", "--checkpoint", official[5], "--data", official["root"],
            "--out", out, "--device", "cpu", env=official["env"])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["mAP"] <= 1.0 and json.loads(r.stdout)["checkpoint"] == str(official[5])
    status, err = in_process(monkeypatch, capsys, official, "evaluate", "run", "--config", "yowo_tiny", "--checkpoint",
                             official[24], "--data", official["root"], "--out", tmp_path / "ev24", "--device", "cpu")
    assert (status, err.strip()) == (2, f"vad-repro evaluate run: {official[24]}: its model has 24 classes, the val split "
                                        f"of {official['root']} has 5; evaluate it on its own dataset (--data)"), err


def test_train_starts_from_an_official_checkpoint(official, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "--config", "yowo_tiny", "--init", f"model={official[5]}", "--out", run, "--no-eval",
            "--max-steps", "1", "--ckpt-every", "1", env=official["env"])
    assert r.returncode == 0, r.stderr[-3000:]
    tensors = len(official["model5"].state_dict())
    assert f"init model <- {official[5].name} (yowo, sha256 " in r.stderr and f", {tensors} tensors)" in r.stderr, r.stderr
    record = json.loads((run / "config.json").read_text())["initialised_from"]
    assert [(rec["part"], rec["layout"], rec["file"]) for rec in record] == [("", "yowo", official[5].name)]


def assert_one_line(status: int, err: str, prefix: str, *parts: str):
    "Exit status 2, no traceback, the last stderr line `prefix...` holding every part (train logs lines before it)."
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert status == 2 and "Traceback" not in err and last.startswith(prefix), err[-3000:]
    for part in parts: assert part in last, (part, last)


def test_unknown_layout_fails_in_one_line_naming_file_and_keys(official, tmp_path, monkeypatch, capsys):
    mystery = official["mystery"]
    r = cli("detect", GOLF, "--config", "yowo_tiny", "--checkpoint", mystery, "--out", tmp_path / "d", env=official["env"])
    assert r.stderr.count("\n") == 1                                  # the installed command: one line, nothing else
    assert_one_line(r.returncode, r.stderr,
                    f"vad-repro detect: {mystery}: unknown checkpoint layout (top-level keys: ['step', 'weights'])")
    status, err = in_process(monkeypatch, capsys, official, "evaluate", "run", "--config", "yowo_tiny", "--checkpoint",
                             mystery, "--out", tmp_path / "e")
    assert err.count("\n") == 1
    assert_one_line(status, err, f"vad-repro evaluate run: {mystery}: unknown checkpoint layout (top-level keys: "
                                 f"['step', 'weights'])")
    status, err = in_process(monkeypatch, capsys, official, "train", "--config", "yowo_tiny", "--init", f"model={mystery}",
                             "--out", tmp_path / "t", "--no-eval", "--max-steps", "1")
    assert_one_line(status, err, f"vad-repro train: {mystery}: layout not recognised (top-level keys: ['step', 'weights']")


def test_a_state_dict_that_does_not_fit_names_its_first_keys(official, tmp_path, monkeypatch, capsys):
    kinetics = official["kinetics"]
    status, err = in_process(monkeypatch, capsys, official, "detect", GOLF, "--config", "yowo_tiny", "--checkpoint",
                             kinetics, "--out", tmp_path / "d", "--device", "cpu")
    assert err.count("\n") == 1
    assert_one_line(status, err, f"vad-repro detect: {kinetics} does not fit YOWODetector: leftover (not in the model) (1): "
                                 f"['conv1.weight']; missing (not in the checkpoint) (",
                    "top-level keys ['arch', 'epoch', 'state_dict']")
    status, err = in_process(monkeypatch, capsys, official, "train", "--config", "yowo_tiny", "--init",
                             f"model={official[24]}", "--out", tmp_path / "t", "--no-eval", "--max-steps", "1")
    assert_one_line(status, err, f"vad-repro train: {official[24]} (yowo) does not fit YOWODetector: shape mismatches (1): "
                                 f"['conv_final.weight: checkpoint (145, 128, 1, 1) vs model (50, 128, 1, 1)']")
