"""WOO (issue 11): every config ready, the CLI on the tiny model, the Kinetics backbone through `--init`, bad input,
and the GFLOPs of the SR50 model against the paper. Resume and 2-process DDP of `woo_tiny` are in test_engine.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vad_repro import models
from vad_repro.backbones.slowfast import fixture_state_dict
from vad_repro.engine.config import config_names, get_config, is_implemented
from vad_repro.engine.pretrained import initialise
from vad_repro.losses import weighted_sum
from vad_repro.models import StateDictMismatch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = next(p for p in (ROOT.parent / "shared/fixtures/pyslowfast_state_dicts.json",
                           Path("/work/shared/fixtures/pyslowfast_state_dicts.json")) if p.exists())


def test_every_woo_config_is_ready_and_builds():
    names = config_names("woo")
    assert len(names) >= 13
    for name in names:
        cfg = get_config(name)
        assert is_implemented(cfg), name
        with torch.device("meta"): models.build(cfg.model, num_classes=80)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    from vad_repro.data import synth
    synth.ensure("ava", "tiny", seed=0, cache_dir=cache)
    return {**os.environ, "VAD_REPRO_CACHE": str(cache), "OMP_NUM_THREADS": "2", "VAD_REPRO_WEIGHTS": ""}


def test_tiny_trains_and_evaluates_through_the_cli(tmp_path, env):
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "vad_repro.cli"]
    res = subprocess.run(cli + ["train", "--config", "woo_tiny", "--out", str(run), "--max-steps", "3", "--ckpt-every", "3"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss_act", "loss_class", "loss_bbox_0", "weighted_loss_act"} <= set(metrics[0])
    result = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= result["mAP"] <= 1.0 and "chance_mAP" in result


def sr50_state(seed: int = 0) -> dict:
    "A PySlowFast SlowOnly R50 4×16 Kinetics checkpoint (the official key list, random values)."
    state = fixture_state_dict(json.loads(FIXTURE.read_text()), "slowonly_r50_4x16_kinetics", seed)
    return {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}


def test_kinetics_backbone_loads_into_woo_and_a_malformed_one_names_its_keys(tmp_path):
    state = sr50_state()
    path = tmp_path / "SLOWONLY_4x16_R50.pyth"
    torch.save({"model_state": state, "epoch": 196}, path)
    model = models.build("woo_sr50", num_classes=80)
    rec = initialise(model, {"backbone": path})[0]
    assert (rec["part"], rec["layout"]) == ("backbone", "pyslowfast")
    assert torch.equal(model.backbone.state_dict()["slow.res4.blocks.5.conv_a.weight"], state["s4.pathway0_res5.branch2.a.weight"])
    broken = dict(state)
    broken["s4.pathway0_res5.branch2.a.weightt"] = broken.pop("s4.pathway0_res5.branch2.a.weight")
    broken["s5.pathway0_res0.branch1.weight"] = broken["s5.pathway0_res0.branch1.weight"][:, :100]
    torch.save({"model_state": broken}, tmp_path / "broken.pyth")
    with pytest.raises(StateDictMismatch) as err:
        initialise(models.build("woo_sr50", num_classes=80), {"backbone": tmp_path / "broken.pyth"})
    text = str(err.value)
    assert "leftover (not in the model) (1): ['slow.res4.blocks.5.conv_a.weightt']" in text   # the misspelt key ...
    assert "missing (not in the checkpoint) (1): ['slow.res4.blocks.5.conv_a.weight']" in text # ... and the tensor it lacks
    assert "slow.res5.blocks.0.shortcut.weight" in text and "shape mismatches" in text


def test_clips_without_actors_train_and_bad_sizes_fail():
    torch.manual_seed(0)
    det = models.build("woo_tiny", num_classes=4).train()
    batch = {"clip": torch.randn(2, 3, 8, 64, 64), "boxes": [torch.zeros(0, 4)] * 2, "labels": [torch.zeros(0, 4)] * 2,
             "meta": [{}, {}]}
    losses = det(batch)
    assert losses["loss_bbox"].item() == 0 and losses["loss_act"].item() == 0 and losses["loss_class"].item() > 0
    weighted_sum(losses, det.loss_weights).backward()                          # every proposal learns "no actor"
    with pytest.raises(ValueError, match="at least 32 × 32"):
        det(torch.randn(1, 3, 8, 24, 64))


def test_sr50_gflops_within_two_percent_of_the_paper():
    from vad_repro.woo.results import woo_gflops
    assert abs(woo_gflops("woo_sr50") - 68.0) <= 0.02 * 68.0
