"""The GPU benchmark (`tests/bench/bench_gpu.py`) on CPU: its `--quick` run measures every family with the tiny
models and writes both files; CPU numbers never go into `results/`; without CUDA the full run refuses.

The quick run is the same code as the GPU run (the engine's Trainer, loader and detector calls), so a change that
breaks the benchmark's use of the engine fails here before a GPU is lent. About 35 s on the 2-core machine."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "bench" / "bench_gpu.py"
FAMILIES = {"yowo_16f", "yowo_8f", "woo_sr50", "woo_sfr50", "me_stad_sfr50", "cq_vitb"}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module                # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench_quick")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, json.loads((out / "gpu_bench.json").read_text()), (out / "gpu_bench.md").read_text()


def test_quick_run_measures_every_family(quick_run):
    _, data, _ = quick_run
    assert data["quick"] is True and set(data["families"]) == FAMILIES
    for key, r in data["families"].items():
        assert not r.get("errors"), (key, r.get("errors"))
        inf = r["inference"]
        assert positive(inf["network"]["1"]["clips_per_s"]) and positive(inf["detector"]["1"]["clips_per_s"]), key
        largest = inf["largest_batch"]
        assert largest == 2 and inf["search"]["stopped_by"] == "cap", (key, inf["search"])   # --quick caps at 2
        assert positive(inf["network"][str(largest)]["clips_per_s"]), key
        train = r["train"]
        assert train["batch"] == 2 and positive(train["step_s"]) and positive(train["clips_per_s"]), key
        assert math.isfinite(train["loss_last"]) and train["loss_terms"], key           # the model's own loss terms
        assert train["clip"][0] == 2, key                                               # one collated batch of 2 clips
        pipe = r["pipeline"]["by_workers"]
        assert set(pipe) == {"0", "1"} and all(positive(v["clips_per_s"]) for v in pipe.values()), key
        assert "skipped" in r["compiled"], key                                          # --quick does not compile
    other = data["families"]["cq_vitb"]["inference_other_inputs"]                       # CQ's second tube input
    assert len(other) == 1 and positive(next(iter(other.values()))["network"]["1"]["clips_per_s"])
    figures = {c["source"]: c for c in data["paper_comparison"]}
    assert any("YOWO Table 9" in k for k in figures) and any("CQ Table 6" in k for k in figures)
    cq = next(c for k, c in figures.items() if "J-HMDB" in k)
    assert cq["paper"] == 432.0 and positive(cq["ours_network"]) and positive(cq["speedup_network"])


def test_quick_markdown_names_the_device(quick_run):
    _, data, md = quick_run
    lines = md.splitlines()
    assert data["device_name"] and f"Device: {data['device_name']}" in lines
    assert any(line.startswith(f"torch {torch.__version__}") for line in lines)
    for key in FAMILIES: assert f"| {key} |" in md, key
    assert "--quick: tiny CPU stand-ins" in md


def test_cpu_numbers_never_go_into_results():
    bench = load_bench()
    if torch.cuda.is_available(): pytest.skip("a CUDA machine may write results/")
    assert bench.main(["--quick", "--out", str(REPO / "results")]) == 2          # refused before anything runs
    assert bench.main([]) == 2                                                     # no CUDA, no --quick: exit 2
