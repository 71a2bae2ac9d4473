"""The installed `vad-repro` console script, run as a user runs it (a subprocess)."""
import json
import shutil
import subprocess
import sys

import pytest

from vad_repro.cli import SUBCOMMANDS, resolve

EXE = shutil.which("vad-repro")


def run(*args, timeout=300):
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "vad_repro.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_console_script_is_installed():
    assert EXE, "`vad-repro` is not on PATH: is the package installed (pip install -e .)?"


def test_top_level_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for name in SUBCOMMANDS:
        assert f"  {name} " in r.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name):
    r = run(name, "--help")
    assert r.returncode == 0, r.stderr
    assert f"vad-repro {name}" in r.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_unfinished_subcommand_exits_2(name):
    if resolve(name) is not None:
        pytest.skip(f"{name} is implemented")
    r = run(name)
    assert r.returncode == 2 and "not implemented yet" in r.stderr


def test_unknown_subcommand():
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr


def test_flops_list_and_unknown_name():
    r = run("flops", "--list")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert names == sorted(names) and len(names) == len(set(names))
    r = run("flops", "no_such_model_xyz")
    assert r.returncode == 2 and "unknown model" in r.stderr


def test_flops_json_on_a_registered_model():
    # the engine's minimal detector: cheap to build and count, registered at 8x64x64
    r = run("flops", "minimal_detector", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"name", "frames", "size", "gflops", "mparams"}
    assert (out["name"], out["frames"], out["size"]) == ("minimal_detector", 8, 64)
    assert out["gflops"] > 0 and out["mparams"] > 0
    r = run("flops", "minimal_detector", "--json", "--size", "128")   # 4x the pixels, 4x the flops
    assert abs(json.loads(r.stdout)["gflops"] / out["gflops"] - 4) < 1e-6


def test_tables_unknown_paper():
    r = run("tables", "no_such_paper", "--out", "/tmp/vad_repro_tables_test")
    assert r.returncode == 2 and "no tables for" in r.stderr
