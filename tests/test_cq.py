"""CQ beyond the notebooks' unit tests: training and evaluation through the command line, the plain-PyTorch deformable
attention against its loop on random shapes, tube matching against brute force, the tube evaluation on the synthetic
set, and the errors a user sees on bad input. Resume and 2-process DDP of `cq_tiny` are in test_engine.py."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vad_repro.cq.encoder import ms_deform_attn_3d, ms_deform_attn_3d_naive
from vad_repro.cq.loss import CQLossConfig, match_tubes, tube_cost_matrix
from vad_repro.cq.model import build_cq_tiny


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    from vad_repro.data import synth
    synth.ensure("ucf", "tiny", seed=0, cache_dir=d)
    return d


def test_cli_trains_and_evaluates_cq_tiny(tmp_path, cache):
    env = {**os.environ, "VAD_REPRO_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-m", "vad_repro.cli", "train", "--config", "cq_tiny", "--out", str(tmp_path / "r"),
                        "--max-steps", "3"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((tmp_path / "r" / "eval.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= ev["mAP"] <= 1.0 and ev["step"] == 3
    metrics = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_class", "loss_bbox", "loss_giou", "loss_conf", "loss_class_0"} <= set(metrics)


shape = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(shape, min_size=1, max_size=3), heads=st.integers(1, 3), points=st.integers(1, 3),
       queries=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_deformable_attention_equals_its_loop(shapes, heads, points, queries, seed):
    g = torch.Generator().manual_seed(seed)
    S, L, Dh = sum(t * h * w for t, h, w in shapes), len(shapes), 2
    value = torch.randn(1, S, heads, Dh, generator=g, dtype=torch.float64)
    loc = torch.rand(1, queries, heads, L, points, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2   # some outside the volume
    A = torch.rand(1, queries, heads, L, points, generator=g, dtype=torch.float64)
    A = A / A.sum((-1, -2), keepdim=True)
    fast, loop = ms_deform_attn_3d(value, shapes, loc, A), ms_deform_attn_3d_naive(value, shapes, loc, A)
    assert torch.allclose(fast, loop, atol=1e-10), (fast - loop).abs().max()


@settings(max_examples=30, deadline=None)
@given(Q=st.integers(1, 4), G=st.integers(0, 3), T=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_tube_matching_is_the_cheapest_assignment(Q, G, T, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = CQLossConfig()
    logits, boxes = torch.randn(1, Q, T, 3, generator=g), torch.rand(1, Q, T, 4, generator=g) * 0.5 + 0.25
    xy = torch.rand(G, T, 2, generator=g) * 0.5
    target = {"tubes": torch.cat([xy, xy + 0.2], -1), "valid": torch.rand(G, T, generator=g) > 0.3,
              "labels": (torch.rand(G, 3, generator=g) > 0.5).float()}
    target["valid"][:, 0] = True                                             # every tube has at least one box
    (q, gt), = match_tubes(logits, boxes, [target], cfg)
    cost = tube_cost_matrix(logits[0], boxes[0], target, cfg)
    assert len(q) == min(Q, G)
    best = min((sum(cost[i, j] for i, j in zip(perm, range(G))) for perm in itertools.permutations(range(Q), G)), default=0.0)
    if G <= Q: assert abs(float(cost[q, gt].sum()) - float(best)) < 1e-4


def test_tube_evaluation_on_the_synthetic_set(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("VAD_REPRO_CACHE", str(cache))
    from vad_repro.cq.evaluation import GTBoxOracle, evaluate_cq, restrict_videos, split_dataset
    from vad_repro.engine.config import get_config
    cfg = get_config("cq_tiny")
    data = split_dataset(cfg)
    data = restrict_videos(data, list(data.gt_files["videos"])[:2])
    torch.manual_seed(0)
    model = build_cq_tiny(num_classes=data.num_classes).eval()
    plain = evaluate_cq(model, cfg, data, tmp_path / "plain")
    oracle = evaluate_cq(GTBoxOracle(model), cfg, data, tmp_path / "oracle")
    for res in (plain, oracle):
        assert 0.0 <= res["frame_mAP"] <= 1.0 and set(res["video_mAP"]) >= {"0.2", "0.5"}
    assert oracle["actor_AP"] >= plain["actor_AP"]                       # true boxes on the matched candidates


def test_tube_configs_train_on_the_authors_windows(cache, monkeypatch):
    """The CQ UCF recipe cuts every training video into consecutive T-frame windows (action-free ones too), and a
    window's targets hold every tube that crosses it, with its class, also one that misses the key frame."""
    monkeypatch.setenv("VAD_REPRO_CACHE", str(cache))
    import math
    from vad_repro.cq.loss import tube_targets
    from vad_repro.data import collate_detection
    from vad_repro.engine.config import get_config
    from vad_repro.engine.data import build_data
    cfg = get_config("cq_vitb_ucf").replace(synth_size="tiny", size=64, transforms="none", num_frames=8, train_frame_stride=8)
    data = build_data(cfg, "train", train=True)
    nframes = data.gt["nframes"]
    assert len(data) == sum(math.ceil(nframes[v] / 8) for v in data.gt_files["videos"])
    assert any(len(data[i]["boxes"]) == 0 for i in range(len(data)))                  # windows without an action
    extra = [i for i in range(len(data)) if len(data[i]["tubes"]) > len(data[i]["boxes"])]
    assert extra, "no window with a tube that misses its key frame"
    s = data[extra[0]]
    t = tube_targets(collate_detection([s]), 8, 4)[0]
    assert len(t["labels"]) == len(s["tubes"]) and t["valid"][len(s["boxes"]):, 4].logical_not().all()


def test_bad_inputs_name_the_problem():
    model = build_cq_tiny(num_classes=3).eval()
    with pytest.raises(ValueError, match="decodes 8-frame clips"):
        model(torch.zeros(1, 3, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.zeros(1, 8, 64, 64))
    with pytest.raises(ValueError, match="CQDecoderConfig.combine"):
        build_cq_tiny(num_classes=3, combine="product")
    with pytest.raises(ValueError, match="CQConfig.encoder"):
        build_cq_tiny(num_classes=3, encoder="lstm")
    train = build_cq_tiny(num_classes=3).train()
    batch = {"clip": torch.zeros(1, 3, 8, 64, 64), "boxes": [torch.tensor([[0.1, 0.1, 0.5, 0.5]])], "labels": [torch.tensor([[1.0, 0, 0]])],
             "tubes": [torch.zeros(1, 5, 4)], "tube_valid": [torch.ones(1, 5, dtype=torch.bool)], "meta": [{}]}
    with pytest.raises(ValueError, match="tubes of 5 frames for a 8-frame clip"):
        train(batch)
