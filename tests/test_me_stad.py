"""ME-STAD beyond the notebooks' unit tests: the semi-supervised stage inside the trainer (burn-in, the EMA
teacher handed over at `ema_start`, unlabeled pairs from then on), evaluation through the CLI, TLA's
invariants on random cases, and the errors a user sees on bad input."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vad_repro.engine.config import get_config, iters
from vad_repro.me_stad.model import MEStadConfig, build_me_stad_tiny
from vad_repro.me_stad.tla import temporal_label_assignment


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    from vad_repro.data import synth
    synth.ensure("ava", "tiny", seed=0, cache_dir=d)
    return d


def test_teacher_is_the_burnt_in_detector_then_pairs_flow(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("VAD_REPRO_CACHE", str(cache))
    from vad_repro.engine.trainer import Trainer, unwrap_model
    cfg = get_config("me_stad_ssad_tiny").replace(train_length=iters(6))
    burn_in = Trainer(cfg, tmp_path / "run")
    seen = []
    model = unwrap_model(burn_in.model)
    hook = model.before_step
    model.before_step = lambda step, teacher: (seen.append((step, teacher is not None)), hook(step, teacher))
    burn_in.fit()
    assert seen == [(s, False) for s in range(1, 7)]                         # no teacher during burn-in
    student = unwrap_model(burn_in.model).state_dict()
    for k, v in burn_in.ema.state_dict().items():                             # the EMA copied the weights until ema_start
        assert torch.equal(v, student[k]), k
    cont = Trainer(cfg.replace(train_length=iters(8)), tmp_path / "run", resume=True)
    cont.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all("true_actors" not in r for r in records[:6]) and all(r["true_actors"] > 0 for r in records[6:])
    assert all("loss_action_unsup" in r for r in records)


def test_cli_trains_and_evaluates_me_stad_tiny(tmp_path, cache):
    env = {"VAD_REPRO_CACHE": str(cache), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    import os
    env = {**os.environ, **env}
    r = subprocess.run([sys.executable, "-m", "vad_repro.cli", "train", "--config", "me_stad_tiny", "--out", str(tmp_path / "r"),
                        "--max-steps", "3"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((tmp_path / "r" / "eval.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= ev["mAP"] <= 1.0 and ev["step"] == 3


def test_bad_inputs_name_the_problem():
    model = build_me_stad_tiny(num_classes=3).eval()
    with pytest.raises(ValueError, match="at least 32"):
        model({"clip": torch.zeros(1, 3, 8, 16, 16), "boxes": [], "labels": [], "meta": [{}]})
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model({"clip": torch.zeros(1, 8, 64, 64), "boxes": [], "labels": [], "meta": [{}]})
    with pytest.raises(ValueError, match="pseudo_labels"):
        MEStadConfig(pseudo_labels="confidence")
    needs = build_me_stad_tiny(num_classes=3, train_inputs="proposals").train()
    with pytest.raises(ValueError, match="box_groups"):
        needs({"clip": torch.zeros(1, 3, 8, 64, 64), "boxes": [torch.tensor([[0.1, 0.1, 0.5, 0.5]])],
               "labels": [torch.tensor([[1.0, 0, 0]])], "meta": [{}]})


boxes = st.integers(0, 6)


@settings(max_examples=40, deadline=None)
@given(n=boxes, left=boxes, right=boxes, seed=st.integers(0, 10_000))
def test_tla_assigns_each_box_once_and_only_neighbour_labels(n, left, right, seed):
    g = torch.Generator().manual_seed(seed)
    def rand_boxes(k):
        xy = torch.rand(k, 2, generator=g) * 0.5
        return torch.cat([xy, xy + 0.1 + torch.rand(k, 2, generator=g) * 0.4], 1)
    K = 5
    lab = lambda k: (torch.rand(k, K, generator=g) > 0.6).float()
    L, R = (rand_boxes(left), lab(left)), (rand_boxes(right), lab(right))
    b, l, i = temporal_label_assignment(rand_boxes(n), torch.rand(n, K, generator=g), L, R)
    M = left + right
    assert len(i) == len(set(i.tolist())) == min(n, M)                 # rectangular assignment: every box, or every proposal
    rows = {tuple(r.tolist()) for r in torch.cat([L[1], R[1]])}
    assert all(tuple(r.tolist()) in rows for r in l)


def test_proposals_travel_with_the_clip_through_transforms_and_padding(cache, monkeypatch):
    monkeypatch.setenv("VAD_REPRO_CACHE", str(cache))
    from vad_repro.data import synth
    from vad_repro.data.ava import ava_files, read_proposals
    from vad_repro.data.datasets import AVADataset, collate_detection
    from vad_repro.data.transforms import for_paper
    root = synth.ensure("ava", "tiny", seed=0, cache_dir=cache)
    ds = AVADataset(root, "train", 4, 2, proposals=True)
    s = ds[0]
    video, ts = ds.samples[0]
    boxes, scores = read_proposals(ava_files(root, "train")["proposals"])[(video, ts)]
    assert torch.allclose(s["box_groups"]["proposals"]["boxes"], torch.from_numpy(boxes))
    assert torch.allclose(s["box_groups"]["proposals"]["labels"][:, 0], torch.from_numpy(scores))
    cropped = AVADataset(root, "train", 4, 2, proposals=True, transform=for_paper("me_stad", True, 48))[0]
    g = cropped["box_groups"]["proposals"]
    assert len(g["boxes"]) == len(g["labels"]) and (g["boxes"] >= 0).all() and (g["boxes"] <= 1).all()
    wide = dict(s, clip=torch.zeros(3, 4, 64, 128))
    batch = collate_detection([s, wide])                    # s is padded to 128 wide: its proposals shrink in x
    assert torch.allclose(batch["box_groups"]["proposals"]["boxes"][0][:, 0], s["box_groups"]["proposals"]["boxes"][:, 0] * 0.5)
    with pytest.raises(FileNotFoundError, match="proposal"):
        import shutil, tempfile
        bare = Path(tempfile.mkdtemp()) / "ava"
        shutil.copytree(root, bare)
        for p in (bare / "annotations").glob("*predicted_boxes*"): p.unlink()
        AVADataset(bare, "train", 4, 2, proposals=True)


def test_test_time_proposals_replace_fcos_boxes():
    model = build_me_stad_tiny(num_classes=3, test_inputs="proposals").eval()
    props = {"boxes": [torch.tensor([[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.9]])], "labels": [torch.tensor([[0.9], [0.7]])]}
    det = model({"clip": torch.randn(1, 3, 8, 64, 64), "boxes": [], "labels": [], "meta": [{}], "box_groups": {"proposals": props}})[0]
    assert torch.allclose(det["boxes"], props["boxes"][0]) and torch.allclose(det["actor_scores"], torch.tensor([0.9, 0.7]))
