"""ViT-B (VideoMAE) backbone: registry, and equivalence with the official implementations.

The live comparisons need `transformers` (and, for MCG-NJU/VideoMAE, `timm` plus the official
`modeling_finetune.py` / `modeling_pretrain.py` copied to /tmp/videomae_official); they are not
project dependencies, so those tests skip without them.

`python tests/test_vit.py fixtures` rewrites tests/fixtures/vit_b_videomae_*.json from the
official code (see `write_fixtures`).
"""
import json
import sys
from pathlib import Path

import pytest
import torch

from vad_repro import models
from vad_repro.backbones.vit import build_vit, from_transformers, from_videomae

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = Path("/tmp/videomae_official")         # MCG-NJU/VideoMAE @ 14ef8d8 (never committed)


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    "max |ours - theirs| / max |theirs|"
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def perturb(model: torch.nn.Module, seed: int = 0):
    "Random values in every parameter (biases and norms too, which init leaves at 0 / 1)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.02 if p.ndim > 1 else 0.1
            p.copy_((1.0 if name.endswith("norm.weight") or "norm1.weight" in name or "norm2.weight" in name
                     or "layernorm" in name and name.endswith("weight") else 0.0)
                    + scale * torch.randn(p.shape, generator=g))


def test_registry():
    models.discover()
    for name in ("vit_b_videomae", "vit_b_videomae_k400", "vit_tiny"):
        assert name in models._REGISTRY
    tiny = models.build("vit_tiny").eval()
    with torch.no_grad():
        out = tiny(torch.randn(1, 3, 16, 224, 224))
    assert {k: v[0].shape for k, v in out.items()} == {"block1": (1, 64, 8, 14, 14), "block2": (1, 64, 8, 14, 14)}


def hf_model(tfm, small: bool):
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
              image_size=32, num_frames=4) if small else dict(image_size=224, num_frames=16)
    cfg = tfm.VideoMAEConfig(layer_norm_eps=1e-6, use_mean_pooling=False, qkv_bias=True, **kw)
    cfg._attn_implementation = "eager"
    return tfm.VideoMAEModel(cfg).eval(), cfg


@pytest.mark.parametrize("small", [True, False])
def test_matches_transformers(small):
    tfm = pytest.importorskip("transformers")
    theirs, cfg = hf_model(tfm, small)
    perturb(theirs)
    arch = dict(depth=cfg.num_hidden_layers, width=cfg.hidden_size, heads=cfg.num_attention_heads,
                out_blocks=(cfg.num_hidden_layers,))
    ours = from_transformers(theirs.state_dict(), **arch).eval()
    assert ours.cfg.final_norm                    # use_mean_pooling=False: the final layernorm
    T, S = cfg.num_frames, cfg.image_size
    clip = torch.randn(1, 3, T, S, S, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = theirs(pixel_values=clip.permute(0, 2, 1, 3, 4)).last_hidden_state     # (B, N, C)
        out = ours(clip)[f"block{cfg.num_hidden_layers}"][0].flatten(2).transpose(1, 2)
    err = rel_err(out, ref)
    print(f"transformers VideoMAEModel ({'small' if small else 'ViT-B 16x224'}): max rel err {err:.2e}")
    assert err <= 1e-5


def official_modules():
    pytest.importorskip("timm")
    if not (OFFICIAL / "modeling_finetune.py").exists():
        pytest.skip("MCG-NJU/VideoMAE's modeling files not in /tmp/videomae_official")
    sys.path.insert(0, str(OFFICIAL))
    import modeling_finetune, modeling_pretrain
    return modeling_finetune, modeling_pretrain


def test_matches_mcg_nju():
    ft, pt = official_modules()
    from functools import partial
    theirs = ft.VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
                                  qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                  num_classes=400, all_frames=4, tubelet_size=2).eval()
    perturb(theirs, 1)
    ours = from_videomae({"module": theirs.state_dict()}, head=True, depth=2, width=64, heads=2, out_blocks=(2,)).eval()
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = rel_err(ours(clip), theirs(clip))
    print(f"MCG-NJU VisionTransformer (finetune, depth 2, width 64, 2 heads, 4x32²): max rel err on logits {err:.2e}")
    assert err <= 1e-5

    theirs = ft.vit_base_patch16_224(num_classes=400, all_frames=16, tubelet_size=2).eval()
    perturb(theirs, 3)
    ours = from_videomae({"module": theirs.state_dict()}, head=True).eval()
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = rel_err(ours(clip), theirs(clip))
    print(f"MCG-NJU vit_base_patch16_224 (finetune, ViT-B 16x224²): max rel err on logits {err:.2e}")
    assert err <= 1e-5

    enc = pt.pretrain_videomae_base_patch16_224(decoder_depth=1).eval()
    perturb(enc, 2)
    ours = from_videomae({"model": enc.state_dict()}).eval()
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1568, dtype=torch.bool)
    with torch.no_grad():
        ref = enc.encoder.forward_features(clip, mask)                   # (B, N, C) after encoder.norm
        out = ours(clip)["block12"][0].flatten(2).transpose(1, 2)
    err = rel_err(out, ref)
    print(f"MCG-NJU PretrainVisionTransformer encoder (ViT-B 16x224²): max rel err {err:.2e}")
    assert err <= 1e-5


def shapes(model: torch.nn.Module) -> list:
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def write_fixtures():
    "Key/shape fixtures from the official models (built on the CPU; only names and shapes are kept)."
    ft, pt = official_modules()
    import transformers as tfm
    if True:
        rows = {
            "vit_b_videomae_finetune_k400.json": (
                "MCG-NJU/VideoMAE modeling_finetune.vit_base_patch16_224(num_classes=400, all_frames=16, "
                "tubelet_size=2) @ 14ef8d8", "MCG-NJU/VideoMAE Kinetics-400 fine-tuned checkpoint ['module']",
                ft.vit_base_patch16_224(num_classes=400, all_frames=16, tubelet_size=2)),
            "vit_b_videomae_pretrain.json": (
                "MCG-NJU/VideoMAE modeling_pretrain.pretrain_videomae_base_patch16_224(decoder_depth=4) @ 14ef8d8",
                "MCG-NJU/VideoMAE pre-training checkpoint ['model']",
                pt.pretrain_videomae_base_patch16_224(decoder_depth=4)),
            "vit_b_videomae_transformers_k400.json": (
                f"transformers {tfm.__version__} VideoMAEForVideoClassification(VideoMAEConfig(num_labels=400))",
                "Hugging Face MCG-NJU/videomae-base-finetuned-kinetics layout (transformers >= 5 names)",
                tfm.VideoMAEForVideoClassification(tfm.VideoMAEConfig(num_labels=400))),
        }
    for fname, (model, source, m) in rows.items():
        (FIXTURES / fname).write_text(json.dumps({"model": model, "source": source, "state_dict": shapes(m)}))


if __name__ == "__main__" and sys.argv[1:] == ["fixtures"]:
    write_fixtures()
