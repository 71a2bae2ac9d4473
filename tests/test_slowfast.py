"""SlowOnly / SlowFast backbones (vad_repro.backbones.slowfast): shapes, PySlowFast checkpoint
import, and GFLOPs against the counts of PySlowFast's own architectures (shared/FLOPS_CONVENTIONS.md)."""
import json
import pickle
from pathlib import Path

import pytest
import torch

from vad_repro import models
from vad_repro.backbones.slowfast import (ARCHS, build_pyslowfast_model, fixture_state_dict,
                                          from_pyslowfast, key_frame_slice, pyslowfast_to_ours)
from vad_repro.flops import count_flops, count_params

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = next(p for p in (ROOT.parent / "shared/fixtures/pyslowfast_state_dicts.json",
                           Path("/work/shared/fixtures/pyslowfast_state_dicts.json")) if p.exists())
BACKBONES = [n for n in models.names("slowfast") if not n.endswith("_full")]

@pytest.fixture(scope="module")
def fixture():
    return json.loads(FIXTURE.read_text())

def expected_shapes(name, B, H, W):
    "res2..res5 shapes, slow first, from the architecture's definition (hand-derived)."
    arch = models.spec(name).defaults
    dilated = arch.get("res5_dilation", ARCHS[arch["arch"]].res5_dilation) > 1
    fast = ARCHS[arch["arch"]].fast
    T = 8 if fast else 4
    strides = (4, 8, 16, 16 if dilated else 32)
    out = {}
    for i, stage in enumerate(("res2", "res3", "res4", "res5")):
        s = strides[i]
        shapes = [(B, 256 * 2 ** i, T, H // s, W // s)]
        if fast: shapes.append((B, 32 * 2 ** i, 4 * T, H // s, W // s))
        out[stage] = shapes
    return out

@pytest.mark.parametrize("name", BACKBONES)
def test_shapes_every_variant_and_size(name):
    "Every registered backbone at every input size (on the meta device: shapes only, no compute)."
    spec = models.spec(name)
    with torch.device("meta"):
        model = models.build(name).eval()
        for H, W in [(256, 256), (320, 448)]:
            feats = model(torch.empty(2, 3, spec.frames, H, W))
            got = {k: [tuple(f.shape) for f in v] for k, v in feats.items()}
            assert got == expected_shapes(name, 2, H, W), (H, W)

@pytest.mark.parametrize("name", ["slowonly_r50_4x16_ava"])   # SlowFast runs for real in nbs/30
def test_real_forward_small(name):
    "A real CPU forward at 32²: values are finite and the key-frame slice is the centre frame."
    spec = models.spec(name)
    model = models.build(name).eval()
    with torch.no_grad(): feats = model(torch.randn(1, 3, spec.frames, 32, 32))
    assert {k: [tuple(f.shape) for f in v] for k, v in feats.items()} == expected_shapes(name, 1, 32, 32)
    assert all(torch.isfinite(f).all() for v in feats.values() for f in v)
    kf = key_frame_slice(feats, spec.frames)
    assert torch.equal(kf["res5"][-1], feats["res5"][-1][:, :, feats["res5"][-1].shape[2] // 2])

@pytest.mark.parametrize("arch", list(ARCHS))
def test_fixture_loads_every_tensor(fixture, arch):
    "PySlowFast's key/shape list for `arch`: every tensor lands in the full model and the backbone."
    sd = fixture_state_dict(fixture, arch)
    full = from_pyslowfast({"model_state": sd}, arch, head=True).state_dict()
    for key, value in sd.items():
        ours = pyslowfast_to_ours(key)
        assert torch.equal(full[ours if ours.startswith("head.") else "backbone." + ours], value), key
    mapped = {("" if k.startswith("head.") else "backbone.") + pyslowfast_to_ours(k) for k in sd}
    assert mapped == set(full)                       # and nothing in the model is left unfilled
    backbone = from_pyslowfast(sd, arch).state_dict()
    assert len(backbone) == len(sd) - sum(k.startswith("head.") for k in sd)

@pytest.mark.parametrize("name", ["slowfast_r101nl_8x8_ava_nodil", "slowfast_r101nl_8x8_ava_mmaction2nl"])
def test_fixture_loads_into_variants(fixture, name):
    "The R101-NL checkpoint also fits the non-dilated and the mmaction2-ordered variants."
    d = models.spec(name).defaults
    overrides = {k: v for k, v in d.items() if k != "arch"}
    model = from_pyslowfast(fixture_state_dict(fixture, d["arch"]), d["arch"], **overrides)
    assert model.cfg.res5_dilation == overrides.get("res5_dilation", 2)

def test_mismatches_are_listed(fixture):
    "Leftover, missing and mis-shaped keys all appear in one error."
    sd = fixture_state_dict(fixture, "slowonly_r50_4x16_ava")
    sd["s9.pathway0_res0.branch2.a.weight"] = torch.zeros(1)        # leftover (maps, not in model)
    sd["some.unknown.key"] = torch.zeros(1)                          # no rule maps it
    del sd["s5.pathway0_res2.branch2.c_bn.bias"]                     # missing
    sd["s2.pathway0_res0.branch2.b.weight"] = torch.zeros(64, 64, 3, 3, 3)   # wrong shape
    with pytest.raises(ValueError) as err: from_pyslowfast(sd, "slowonly_r50_4x16_ava")
    msg = str(err.value)
    for part in ("some.unknown.key", "slow.res9.blocks.0.conv_a.weight", "slow.res5.blocks.2.bn_c.bias",
                 "slow.res2.blocks.0.conv_b.weight', 'checkpoint (64, 64, 3, 3, 3) vs model (64, 64, 1, 3, 3)"):
        assert part in msg, part

def test_caffe2_pickle(fixture, tmp_path):
    "A Caffe2 .pkl with the original blob names (conv1, res_conv1_bn, res2_0_branch2a, pred) loads."
    sd = fixture_state_dict(fixture, "slowonly_r50_4x16_kinetics")
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    blobs = {"conv1_w": sd["s1.pathway0_stem.conv.weight"].numpy(), "lr": 0.1, "iter": 1000}
    for k, v in sd.items():
        parts = k.split(".")
        if "num_batches" in k: continue                                  # Caffe2 has no step counters
        if k.startswith("s1.") and parts[2] == "bn": blobs[f"res_conv1_bn_{bn[parts[3]]}"] = v.numpy()
        elif k.startswith("head."): blobs[f"pred_{parts[2][0]}"] = v.numpy()
        elif not k.startswith("s1."):
            stage, block = parts[0][1:], parts[1].split("_res")[1]
            branch = parts[2].removesuffix("_bn") if parts[2] != "branch2" else "branch2" + parts[3][0]
            is_bn = parts[-2].endswith("bn")
            blobs[f"res{stage}_{block}_{branch}" + (f"_bn_{bn[parts[-1]]}" if is_bn else "_w")] = v.numpy()
            blobs[f"res{stage}_{block}_{branch}_w_momentum"] = v.numpy()
    path = tmp_path / "SLOW_4x16_R50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    model = from_pyslowfast(path, "slowonly_r50_4x16_kinetics", head=True).state_dict()
    assert torch.equal(model["backbone.slow.res4.blocks.5.bn_b.running_var"],
                       sd["s4.pathway0_res5.branch2.b_bn.running_var"])
    assert torch.equal(model["head.projection.weight"], sd["head.projection.weight"])
    blobs["res9_mystery"] = 0
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    with pytest.raises(ValueError, match="res9_mystery"): from_pyslowfast(path, "slowonly_r50_4x16_kinetics")

# PySlowFast's own architectures under fvcore, with BN / without, at 224², 256², 320²
# (shared/FLOPS_CONVENTIONS.md); name -> {size: (with BN, without BN)}
PYSLOWFAST_GFLOPS = {
    "slowonly_r50_4x16_kinetics": {224: (20.96, 20.87), 256: (27.37, 27.26), 320: (42.77, 42.59)},
    "slowonly_r50_4x16_ava": {224: (31.92, 31.81), 256: (41.69, 41.55), 320: (65.13, 64.93)},
    "slowfast_r50_8x8_kinetics": {224: (50.58, 50.31), 256: (66.06, 65.71), 320: (103.23, 102.67)},
    "slowfast_r50_8x8_ava": {224: (74.49, 74.18), 256: (97.29, 96.89), 320: (152.02, 151.39)},
    "slowfast_r101nl_8x8_ava": {224: (112.36, 111.91), 256: (147.13, 146.55), 320: (231.30, 230.40)},
    "slowfast_r101nl_8x8_ava_nodil": {224: (88.45, 88.04), 256: (115.90, 115.37), 320: (182.51, 181.68)},
}
def counting_model(name):
    "The registered model with all-zero weights: built on `meta` (no random init), then materialised."
    with torch.device("meta"): model = models.build(name).eval()
    model = model.to_empty(device="cpu")
    for t in model.state_dict().values(): t.zero_()
    return model

BASE = 32   # every stage's size divides exactly from 32² up to 224², 256², 320² (powers of 2 · 7, 8, 10)

def scaled_gflops(fc, size):
    """fvcore flops at `size` from a trace at BASE²: every conv/BN count is (output positions ×
    per-position work), so it scales exactly with the area; the non-local attention (matmul:
    N·M·C with N, M both ∝ area) scales with its square."""
    r = (size / BASE) ** 2
    attention = fc.by_operator.get("matmul", 0)
    with_bn = (fc.flops - attention) * r + attention * r * r
    return with_bn / 1e9, (with_bn - fc.by_operator.get("batch_norm", 0) * r) / 1e9

def test_area_scaling_is_exact():
    "The scaling above against real counts: a dilated SlowOnly, and a non-local block (quadratic term)."
    model = counting_model("slowonly_r50_4x16_ava")
    small = count_flops(model, (torch.randn(1, 3, 4, BASE, BASE),), "fvcore")
    real = count_flops(model, (torch.randn(1, 3, 4, 64, 64),), "fvcore")
    assert scaled_gflops(small, 64) == pytest.approx((real.gflops, real.gflops - real.by_operator["batch_norm"] / 1e9), rel=1e-12)
    from vad_repro.backbones.slowfast import NonLocal
    block = NonLocal(64).eval()                     # on res4 of a BASE² clip: 2×2 positions, 8 frames
    small = count_flops(block, (torch.randn(1, 64, 8, BASE // 16, BASE // 16),), "fvcore")
    real = count_flops(block, (torch.randn(1, 64, 8, 14, 14),), "fvcore")      # res4 at 224²
    assert scaled_gflops(small, 224)[0] == pytest.approx(real.gflops, rel=1e-12)

@pytest.mark.parametrize("name", list(PYSLOWFAST_GFLOPS))
def test_fvcore_matches_pyslowfast(name):
    "Same architecture, same multiply-adds: within 0.5 % of PySlowFast at every size, BN or not."
    spec = models.spec(name)
    fc = count_flops(counting_model(name), (torch.randn(1, 3, spec.frames, BASE, BASE),), "fvcore")
    for size, (with_bn, without_bn) in PYSLOWFAST_GFLOPS[name].items():
        ours_bn, ours_nobn = scaled_gflops(fc, size)
        assert ours_bn == pytest.approx(with_bn, rel=5e-3), (size, "with BN")
        assert ours_nobn == pytest.approx(without_bn, rel=5e-3), (size, "without BN")

@pytest.mark.parametrize("arch,mparams", [("slowonly_r50_4x16_ava", 31.80), ("slowfast_r50_8x8_ava", 33.83),
                                          ("slowfast_r101nl_8x8_ava", 59.34)])
def test_params_of_ava_models(arch, mparams):
    "PySlowFast's AVA models (backbone + ROI head) have the published parameter counts (±0.5 %)."
    with torch.device("meta"): model = build_pyslowfast_model(arch)
    assert count_params(model) / 1e6 == pytest.approx(mparams, rel=5e-3)
