"""ir-CSN backbones (vad_repro.backbones.csn): registry, shapes, GFLOPs, and strict import of VMZ
(Caffe2 .pkl, TubeR .mat) and mmaction2 checkpoint files, including the failures."""
import json
import pickle
from pathlib import Path

import pytest
import scipy.io
import torch

from vad_repro import models
from vad_repro.backbones.csn import (CSN, CSNConfig, fixture_state_dict, from_mmaction2, from_vmz,
                                     mmaction2_csn_state, vmz_state)
from vad_repro.flops import count_flops, count_params

FIXTURES = Path(__file__).resolve().parent / "fixtures"
torch.set_num_threads(1)

@pytest.fixture(scope="module")
def vmz_blobs():
    return fixture_state_dict(json.loads((FIXTURES / "csn152_vmz_caffe2_blobs.json").read_text()))

@pytest.fixture(scope="module")
def mm_state():
    return fixture_state_dict(json.loads((FIXTURES / "csn152_mmaction2_state_dict.json").read_text()))

def test_registry_names_and_shapes():
    assert {"csn152", "csn152_32x2_ava", "csn_tiny", "csn152_k400"} <= set(models.names("csn"))
    model = models.build("csn_tiny").eval()
    spec = models.spec("csn_tiny")
    with torch.no_grad():
        feats = model(*spec.make_input(spec.frames, spec.size))
    assert [tuple(f[0].shape) for f in feats.values()] == [
        (1, 32, 8, 16, 16), (1, 64, 4, 8, 8), (1, 128, 2, 4, 4), (1, 256, 1, 2, 2)]
    assert models.build("csn152_32x2_ava").cfg.res5_stride == 1
    assert models.spec("csn152_32x2_ava").size == 256

def test_params_and_gflops_full_clip():
    model = CSN().eval()
    assert abs(count_params(model) / 28.88e6 - 1) < 0.005
    flops = count_flops(model, (torch.randn(1, 3, 32, 224, 224),), "fvcore").flops / 1e9
    assert abs(flops / 74.76 - 1) < 0.005, flops

def test_bad_clip_says_what():
    model = models.build("csn_tiny")
    with pytest.raises(ValueError, match="T=12 is not divisible by the total temporal stride 8"):
        model(torch.randn(1, 3, 12, 64, 64))
    with pytest.raises(ValueError, match="24×64"):
        model(torch.randn(1, 3, 8, 24, 64))

def test_vmz_pickle_and_mat_files_give_the_same_model(tmp_path, vmz_blobs):
    blobs = {k: v.numpy() for k, v in vmz_blobs.items()}
    blobs["last_out_L400_w"] = blobs["last_out_L400_w"].reshape(400, 2048, 1, 1, 1)  # use_convolutional_pred
    blobs["comp_0_conv_1_w_momentum"] = blobs["comp_0_conv_1_w"]
    with open(tmp_path / "irCSN_152.pkl", "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    scipy.io.savemat(tmp_path / "irCSN_152.mat", blobs)                # loadmat gives (1, C) vectors
    a = from_vmz(tmp_path / "irCSN_152.pkl", "csn152", head=True).state_dict()
    b = from_vmz(str(tmp_path / "irCSN_152.mat"), "csn152", head=True).state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items() if "num_batches" not in k)
    assert torch.equal(a["fc.weight"], vmz_blobs["last_out_L400_w"])
    state, unmapped, source = vmz_state(tmp_path / "irCSN_152.mat")
    assert unmapped == [] and "fc.weight" not in state and "(VMZ blobs)" in source

def test_mmaction2_checkpoint_file(tmp_path, mm_state):
    torch.save({"meta": {"epoch": 58}, "state_dict": mm_state}, tmp_path / "ircsn.pth")
    model = from_mmaction2(tmp_path / "ircsn.pth", "csn152_32x2_ava")
    assert torch.equal(model.state_dict()["res3.7.conv2.weight"], mm_state["backbone.layer2.7.conv2.0.conv.weight"])
    state, unmapped, _ = mmaction2_csn_state(tmp_path / "ircsn.pth", head=True)
    assert unmapped == [] and "fc.bias" in state and "backbone.stem.conv.weight" in state

def test_wrong_architecture_names_keys_and_shapes(tmp_path, vmz_blobs, mm_state):
    with pytest.raises(models.StateDictMismatch, match=r"res2\.1\.conv1\.weight"):
        from_vmz({"blobs": vmz_blobs}, "csn_tiny")
    with pytest.raises(ValueError, match=r"checkpoint \(64, 3, 3, 7, 7\) vs model \(8, 3, 3, 7, 7\)"):
        from_mmaction2(mm_state, "csn_tiny")
    ip_csn = {**mm_state, "backbone.layer1.0.conv2.1.conv.weight": torch.zeros(64, 64, 1, 1, 1)}
    with pytest.raises(ValueError, match=r"keys no rule maps \(1\).*conv2\.1\.conv\.weight"):
        from_mmaction2(ip_csn)
    with pytest.raises(ValueError, match="expected 4 stages"):
        from_vmz({"blobs": {"conv1_w": vmz_blobs["conv1_w"]}})
