"""Initial weights (issue 18): files in each official layout, loaded per part through `vad-repro train --init`,
recorded with their checksum; a wrong-layout file, a frozen random part and a real-data run without weights
stop before training with a message naming what to pass."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vad_repro import models
from vad_repro.backbones.darknet import Darknet, YOLO_V2_CFG, save_darknet_weights
from vad_repro.backbones.slowfast import build_backbone, fixture_state_dict
from vad_repro.engine.config import get_config
from vad_repro.engine.pretrained import InitError, check_initialisation, initialise

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURE = next(p for p in (ROOT.parent / "shared/fixtures/pyslowfast_state_dicts.json",
                                  Path("/work/shared/fixtures/pyslowfast_state_dicts.json")) if p.exists())
YOWO_FIXTURE = ROOT / "tests/fixtures/yowo_official_state_dict_ucf24_resnext101.json"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    from vad_repro.data import synth
    synth.ensure("ucf", "tiny", seed=0, cache_dir=cache)
    return {**os.environ, "VAD_REPRO_CACHE": str(cache), "OMP_NUM_THREADS": "1", "VAD_REPRO_WEIGHTS": ""}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    "yowo_tiny's branches as the official releases store them: a Kinetics .pth and darknet's .weights."
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    model = models.build("yowo_tiny", num_classes=3)
    def plausible(k, v):                               # random, but a usable network: positive variances, small weights
        if not v.is_floating_point(): return v
        return torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.05
    state = {f"module.{k}": plausible(k, v) for k, v in model.backbone_3d.state_dict().items()}
    state["module.fc.weight"], state["module.fc.bias"] = torch.randn(400, 8), torch.randn(400)   # the Kinetics classifier
    torch.save({"epoch": 200, "arch": "shufflenetv2", "state_dict": state}, d / "kinetics_3d.pth")
    darknet = Darknet(YOLO_V2_CFG, 0.125, 64)
    for p in darknet.parameters(): torch.nn.init.normal_(p, std=0.05)
    save_darknet_weights(darknet, d / "yolo.weights")
    return {"dir": d, "3d": d / "kinetics_3d.pth", "2d": d / "yolo.weights", "state_3d": state, "darknet": darknet.state_dict()}


def train(env, out, *extra):
    cmd = [sys.executable, "-m", "vad_repro.cli", "train", "--config", "yowo_tiny", "--out", str(out), "--no-eval",
           "--max-steps", "2", "--ckpt-every", "2", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_per_part_is_loaded_recorded_and_frozen(tmp_path, env, files):
    run = tmp_path / "run"
    res = train(env, run, "--init", f"backbone_3d={files['3d']}", "--init", f"backbone_2d={files['2d']}",
                "--set", "frozen=('backbone_3d',)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"init backbone_3d <- kinetics_3d.pth (kinetics3d, sha256 {sha256(files['3d'])[:12]}" in res.stderr
    assert "init backbone_2d <- yolo.weights (darknet, sha256" in res.stderr
    record = json.loads((run / "config.json").read_text())["initialised_from"]
    assert [(r["part"], r["layout"], r["file"]) for r in record] == [("backbone_3d", "kinetics3d", "kinetics_3d.pth"),
                                                                     ("backbone_2d", "darknet", "yolo.weights")]
    assert record[0]["sha256"] == sha256(files["3d"]) and record[1]["sha256"] == sha256(files["2d"])
    ck = torch.load(run / "checkpoints" / "step_00000002.pt", map_location="cpu", weights_only=False)
    assert ck["init"] == record
    for k, v in ck["model"].items():                  # frozen and loaded: after two steps still the file's tensors
        if k.startswith("backbone_3d."):
            assert torch.equal(v, files["state_3d"]["module." + k[len("backbone_3d."):]]), k
    moved = [k for k, v in ck["model"].items() if k.startswith("backbone_2d.") and k.endswith("weight")
             and not torch.equal(v, files["darknet"][k[len("backbone_2d."):]])]
    assert moved, "the 2D branch was loaded and then trained"


def test_resume_keeps_the_record_without_reloading(tmp_path, env, files):
    run = tmp_path / "run"
    assert train(env, run, "--init", f"backbone_3d={files['3d']}").returncode == 0
    res = train(env, run, "--init", f"backbone_3d={files['3d']}", "--resume", "--max-steps", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stderr and "init backbone_3d" not in res.stderr   # the checkpoint holds the weights
    assert json.loads((run / "config.json").read_text())["initialised_from"][0]["sha256"] == sha256(files["3d"])


def test_wrong_layout_and_wrong_part_fail_naming_the_file(tmp_path, env, files):
    res = train(env, tmp_path / "a", "--init", f"backbone_3d={files['2d']}")
    assert res.returncode == 2 and "is a darknet checkpoint, which fits a Darknet; the part is a ShuffleNetV2" in res.stderr
    res = train(env, tmp_path / "b", "--init", f"backbone={files['3d']}")
    assert res.returncode == 2 and "has no part 'backbone'" in res.stderr
    bad = tmp_path / "other_arch.pth"                 # the right layout, another network: every key named
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(1)}}, bad)
    res = train(env, tmp_path / "c", "--init", f"backbone_3d={bad}")
    assert res.returncode == 2 and "missing (not in the checkpoint)" in res.stderr and "leftover (not in the model)" in res.stderr
    unknown = tmp_path / "mystery.pth"
    torch.save({"weights": torch.zeros(1)}, unknown)
    res = train(env, tmp_path / "d", "--init", f"backbone_3d={unknown}")
    assert res.returncode == 2 and "layout not recognised" in res.stderr and "PART=LAYOUT:" in res.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_frozen_random_part_is_an_error(tmp_path, env):
    res = train(env, tmp_path / "run", "--set", "frozen=('backbone_3d',)")
    assert res.returncode == 2
    assert "freezes ['backbone_3d'] but does not load them from a file" in res.stderr


def test_real_data_without_weights_stops_naming_the_files(tmp_path, env):
    from vad_repro.data import synth
    root = synth.ensure("ucf", "tiny", seed=0, cache_dir=env["VAD_REPRO_CACHE"])   # a dataset in the official format
    cmd = [sys.executable, "-m", "vad_repro.cli", "train", "--config", "yowo_resnext101_16f_ucf", "--data", str(root),
           "--out", str(tmp_path / "run"), "--no-eval"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "backbone_3d: Kinetics-400" in res.stderr and "official file resnext-101-kinetics.pth" in res.stderr
    assert "backbone_2d:" in res.stderr and "yolo.weights" in res.stderr and "--random-init" in res.stderr
    assert not (tmp_path / "run").exists()            # stopped before anything was written
    cfg = get_config("yowo_resnext101_16f_ucf").replace(data_root=str(root))
    check_initialisation(cfg.replace(random_init=True))                          # asked for explicitly: allowed
    with pytest.raises(InitError, match="not found in --weights-dir"):
        check_initialisation(cfg, weights_dir=tmp_path)


def caffe2_blobs(state: dict) -> dict:
    "PySlowFast-named tensors of a SlowOnly R50 -> the Caffe2 blob names of the model zoo's .pkl."
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    blobs = {"lr": 0.1, "iter": 1000}
    for k, v in state.items():
        if k.endswith("num_batches_tracked") or k.startswith("head."): continue
        parts = k.split(".")
        if k.startswith("s1."):
            blobs["conv1_w" if parts[2] == "conv" else f"res_conv1_bn_{bn[parts[3]]}"] = v.numpy()
            continue
        stage, block = parts[0][1], parts[1].split("_res")[1]
        branch = {"branch1": "branch1", "branch1_bn": "branch1"}.get(parts[2]) or f"branch2{parts[3][0]}"
        is_bn = parts[2] == "branch1_bn" or parts[3].endswith("_bn")
        blobs[f"res{stage}_{block}_{branch}" + (f"_bn_{bn[parts[-1]]}" if is_bn else "_w")] = v.numpy()
        if not is_bn: blobs[f"res{stage}_{block}_{branch}_w_momentum"] = v.numpy()   # solver state, set aside
    return blobs


def test_pyslowfast_caffe2_pkl_and_pyth(tmp_path):
    state = fixture_state_dict(json.loads(SHARED_FIXTURE.read_text()), "slowonly_r50_4x16_kinetics")
    pkl = tmp_path / "SLOWONLY_4x16_R50.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": caffe2_blobs(state)}))
    net = build_backbone("slowonly_r50_4x16_kinetics")
    rec = initialise(net, {"": pkl})[0]
    assert rec["layout"] == "pyslowfast" and rec["sha256"] == sha256(pkl)
    assert torch.equal(net.state_dict()["slow.res5.blocks.2.conv_b.weight"], state["s5.pathway0_res2.branch2.b.weight"])
    pyth = tmp_path / "SLOWONLY_4x16_R50.pyth"
    torch.save({"model_state": state, "epoch": 196}, pyth)
    assert initialise(build_backbone("slowonly_r50_4x16_kinetics"), {"": f"pyslowfast:{pyth}"})[0]["layout"] == "pyslowfast"
    with pytest.raises(ValueError, match="missing"):                             # SlowOnly weights, SlowFast network
        initialise(build_backbone("slowfast_r50_8x8_kinetics"), {"": pkl})


def test_released_yowo_checkpoint_into_the_whole_model(tmp_path):
    fixture = json.loads(YOWO_FIXTURE.read_text())
    torch.manual_seed(0)
    state = {k: torch.rand(shape) if not k.endswith("num_batches_tracked") else torch.tensor(7) for k, shape in fixture["state_dict"]}
    path = tmp_path / "yowo_ucf101-24_16f_best.pth"
    torch.save({"epoch": 5, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = models.build("yowo_resnext101_16f", num_classes=24)
    rec = initialise(model, {"": path})[0]
    assert rec["layout"] == "yowo" and rec["tensors"] == len(state)
    assert torch.equal(model.state_dict()["fusion.conv_bn_relu1.0.weight"], state["cfam.conv_bn_relu1.0.weight"])


# --- the CQ backbones' layouts (issue 13): files made from the official key/shape fixtures, recognised and loaded strictly
BACKBONE_FIXTURES = [  # (fixture, how the file is saved, layout detected, registry name, build overrides)
    ("csn152_vmz_caffe2_blobs.json", "pkl", "vmz", "csn152", {}),
    ("csn152_mmaction2_state_dict.json", "pth", "mmaction2", "csn152", {}),
    ("vit_b_videomae_finetune_k400.json", "pth", "videomae", "vit_b_videomae", {}),
    ("vit_b_videomae_pretrain.json", "pth", "videomae", "vit_b_videomae", {"final_norm": True}),
    ("vit_b_videomae_transformers_k400.json", "pth", "transformers", "vit_b_videomae", {}),
]


@pytest.mark.parametrize("fixture,kind,layout,name,overrides", BACKBONE_FIXTURES)
def test_cq_backbone_layouts_are_recognised_and_load(tmp_path, fixture, kind, layout, name, overrides):
    import pickle
    from vad_repro import models
    from vad_repro.engine.pretrained import initialise
    fx = json.loads((ROOT / "tests/fixtures" / fixture).read_text())
    if layout in ("vmz", "mmaction2"):
        from vad_repro.backbones.csn import fixture_state_dict
    else:
        from vad_repro.backbones.vit import fixture_state_dict
    state = fixture_state_dict(fx)
    path = tmp_path / f"weights.{kind}"
    if kind == "pkl":
        with open(path, "wb") as f: pickle.dump({"blobs": {k: v.numpy() for k, v in state.items()}}, f)
    else:
        torch.save({"model": state} if layout == "videomae" else state, path)
    net = models.build(name, **overrides)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rec = initialise(net, {"": path})[0]
    assert rec["layout"] == layout and rec["tensors"] > 0
    changed = sum(not torch.equal(before[k], v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert changed == len([k for k in before if not k.endswith("num_batches_tracked")])   # every tensor came from the file


def test_a_backbone_checkpoint_in_the_wrong_backbone_fails_clearly(tmp_path):
    from vad_repro import models
    from vad_repro.engine.pretrained import InitError, initialise
    from vad_repro.backbones.vit import fixture_state_dict
    fx = json.loads((ROOT / "tests/fixtures/vit_b_videomae_pretrain.json").read_text())
    torch.save(fixture_state_dict(fx), tmp_path / "pretrain.pth")
    with pytest.raises(InitError, match="fits a ViT; the part is a CSN"):
        initialise(models.build("csn_tiny"), {"": tmp_path / "pretrain.pth"})
    with pytest.raises(InitError, match="final_norm=True"):
        initialise(models.build("vit_b_videomae"), {"": tmp_path / "pretrain.pth"})
    fine = json.loads((ROOT / "tests/fixtures/vit_b_videomae_finetune_k400.json").read_text())
    torch.save({"module": fixture_state_dict(fine)}, tmp_path / "finetuned.pth")
    with pytest.raises(Exception, match="shape mismatches"):                  # ViT-B weights into the tiny ViT
        initialise(models.build("vit_tiny"), {"": tmp_path / "finetuned.pth"})
