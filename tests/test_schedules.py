"""Every named config's learning-rate curve, read from the scheduler the trainer builds, against the
schedule its paper (or official code) states — written out here independently of the presets (issue 18).

An epoch of SPE global batches is assumed; a schedule stated in iterations must not depend on it,
one stated in epochs must scale with it — both are checked with two epoch sizes.
"""
from __future__ import annotations

import math

import pytest

from vad_repro.engine.config import config_names, get_config
from vad_repro.engine.trainer import lr_curve, resolve_steps

EPOCH_SIZES = (700, 20_000)   # global batches per epoch: a small dataset and one larger than YOWO's 30k-iteration milestones


def step_factor(i: int, milestones: list[int], gamma: float) -> float:
    return gamma ** sum(i >= m for m in milestones)


def expected(name: str, spe: int):
    """(total iterations, f(i)) of the stated schedule of config `name`, for `spe` batches per epoch."""
    cfg = get_config(name)
    if name.endswith("_tiny") or name == "minimal_tiny":               # ours: constant, a few iterations
        return 20, lambda i: 1.0
    if name == "woo_overfit":                                           # ours: cosine 1000 iterations, 20 warm-up
        return 1000, lambda i: 0.5 * (1 + math.cos(math.pi * i / 1000)) * (1e-3 + (1 - 1e-3) * i / 20 if i < 20 else 1)
    if name in ("me_stad_overfit", "me_stad_ssad_synth", "cq_overfit", "yowo_overfit", "minimal_overfit"):
        # ours: cosine 800 / 500 / 1200 / 1200 / 1000 iterations, 20 warm-up
        n = {"me_stad_ssad_synth": 500, "cq_overfit": 1200, "yowo_overfit": 1200, "minimal_overfit": 1000}.get(name, 800)
        return n, lambda i: 0.5 * (1 + math.cos(math.pi * i / n)) * (1e-3 + (1 - 1e-3) * i / 20 if i < 20 else 1)
    if name == "minimal_small":                                         # ours: cosine 600 iterations, 30 warm-up
        return 600, lambda i: 0.5 * (1 + math.cos(math.pi * i / 600)) * (1e-3 + (1 - 1e-3) * i / 30 if i < 30 else 1)
    if cfg.paper == "woo":                                              # §4.1 + review: 12 epochs, ×0.1 at 6 and 10, 1000-it warm-up
        warm = lambda i: 1e-3 + (1 - 1e-3) * i / 1000 if i < 1000 else 1.0
        return 12 * spe, lambda i: warm(i) * step_factor(i, [6 * spe, 10 * spe], 0.1)
    if cfg.paper == "me_stad":                                          # §4.1: cosine over 40k (TLA: 60k) iterations
        total = 60_000 if "tla" in name or "pseudo" in name or "lunsup" in name else 40_000
        return total, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
    if cfg.paper == "cq":                                               # the authors' configs (Dab_conv_trans_*.yaml)
        if cfg.data_format == "ucf": return 18 * spe, lambda i: step_factor(i, [16 * spe], 0.1)
        if cfg.data_format == "jhmdb": return 350 * spe, lambda i: step_factor(i, [300 * spe], 0.1)
        return 12 * spe, lambda i: step_factor(i, [8 * spe, 11 * spe], 0.1)   # AVA
    if name.startswith("yowo_cpu_"):                                    # ours: cosine 1000 iterations, 50 warm-up
        return 1000, lambda i: 0.5 * (1 + math.cos(math.pi * i / 1000)) * (1e-3 + (1 - 1e-3) * i / 50 if i < 50 else 1)
    data = name.rsplit("_", 1)[1]                                       # YOWO, official cfg/<data>.yaml
    epochs = {"ucf": [2, 3, 4, 5], "jhmdb": [3, 4, 5, 6], "ava": [3, 4, 5, 6]}[data]
    length = {"ucf": 10, "jhmdb": 10, "ava": 50}[data]
    return length * spe, lambda i: step_factor(i, [e * spe for e in epochs], 0.5)


def expected_paper_yowo(name: str, spe: int):
    "YOWO §3.2: ×0.5 after 30k, 40k, 50k, 60k iterations; UCF 5 epochs, J-HMDB 10, AVA (not stated) 5."
    data = name.rsplit("_", 1)[1]
    return {"ucf": 5, "jhmdb": 10, "ava": 5}[data] * spe, lambda i: step_factor(i, [30_000, 40_000, 50_000, 60_000], 0.5)


def probe_points(total: int, spe: int) -> list[int]:
    "Iterations around every boundary that could matter: warm-up, epoch multiples, the paper's iteration milestones."
    points = {0, 1, 499, 500, 999, 1000, total // 2, total - 1}
    for e in range(1, 13): points |= {e * spe - 1, e * spe}
    for m in (29_999, 30_000, 40_000, 50_000, 60_000): points.add(m)
    return sorted(p for p in points if 0 <= p < total)


def check(name: str, cfg, spe: int, total: int, f):
    assert resolve_steps(cfg, spe)[0] == total, (name, spe, resolve_steps(cfg, spe), total)
    points = probe_points(total, spe)
    got = lr_curve(cfg, spe, points)
    for i, lr in zip(points, got):
        assert math.isclose(lr, cfg.lr * f(i), rel_tol=1e-9, abs_tol=1e-15), (name, spe, i, lr, cfg.lr * f(i))


@pytest.mark.parametrize("spe", EPOCH_SIZES)
@pytest.mark.parametrize("name", config_names())
def test_lr_curve_follows_the_stated_schedule(name, spe):
    check(name, get_config(name), spe, *expected(name, spe))


@pytest.mark.parametrize("spe", EPOCH_SIZES)
@pytest.mark.parametrize("name", [n for n in config_names("yowo") if get_config(n).recipe_alternatives])
def test_yowo_paper_recipe(name, spe):
    cfg = get_config(name).with_recipe("paper")
    check(name, cfg, spe, *expected_paper_yowo(name, spe))


def test_every_config_is_covered_and_presets_name_their_weights():
    names = config_names()
    assert len(names) > 120
    for name in names:
        cfg = get_config(name)
        real_paper_row = cfg.paper in ("woo", "me_stad", "cq") and cfg.synth_size != "tiny"   # not the CPU demos
        real_yowo_row = cfg.paper == "yowo" and not name.startswith("yowo_cpu_") and name not in ("yowo_tiny", "yowo_lfb_tiny", "yowo_overfit")
        if real_paper_row or real_yowo_row:
            assert cfg.pretrained, f"{name}: the paper starts from pretrained weights; the preset must name them"
            for part, w in cfg.pretrained.items():
                assert w["from"] and w["layout"], (name, part, w)
