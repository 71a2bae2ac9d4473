"""Execute the result notebooks in place, keeping their outputs, the way `nbdev_test` runs them.

    python .ci/execute_results.py                 # 92-98 (95, the slowest, last)
    python .ci/execute_results.py nbs/94_yowo_results.ipynb

Each notebook runs from `nbs/` in one execnb `CaptureShell`, with nbdev_test's default flags: a
cell whose leading `#|` directives carry a flag of settings.ini's `tst_flags` (`slow`, `gpu`), or
`eval: false`, is not executed and keeps no output. A failing cell stops the script (the
notebook is left unwritten). The executed notebook is then cleaned with `nbdev_clean` (execution
counts and metadata go, outputs stay: settings.ini has `clear_all = False`), and every output is
checked for machine paths: an output holding /work/, /tmp/, /root/ or /home/ fails the script,
naming the notebook and cell.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
DEFAULT = ["92_backbones_results", "93_slowfast_results", "94_yowo_results", "96_me_stad_results",
           "97_cq_results", "98_overview", "95_woo_results"]
FORBIDDEN = ("/work/", "/tmp/", "/root/", "/home/")


def skip_flags() -> set[str]:
    "The flags nbdev_test skips by default (settings.ini `tst_flags`)."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    return set(cfg["DEFAULT"].get("tst_flags", "").split())


def make_skip(flags: set[str]):
    "nbdev_test's `_no_eval`: True for a cell that is not executed."
    from nbdev.process import extract_directives

    def skip(cell) -> bool:
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        directives = extract_directives(cell, remove=False) or {}
        if directives.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & directives.keys())
    return skip


def output_text(output: dict) -> str:
    "Every text of one output (streams, text/* and JSON data, tracebacks), images excluded."
    parts = [output.get("text", "")]
    for mime, v in (output.get("data") or {}).items():
        if mime.startswith("image/"): continue
        parts.append(v if isinstance(v, str) else "".join(v) if isinstance(v, list) else json.dumps(v))
    parts += output.get("traceback", [])
    return "\n".join("".join(p) if isinstance(p, list) else str(p) for p in parts)


def machine_paths(nb_path: Path) -> list[str]:
    "`cell N: /work/...` for every output of the notebook that names a machine path."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    bad = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            text = output_text(out)
            for p in FORBIDDEN:
                if p in text:
                    line = next(l for l in text.splitlines() if p in l)
                    bad.append(f"cell {i}: {line.strip()[:160]}")
    return bad


def execute(nb_path: Path, flags: set[str]) -> float:
    "Run `nb_path` in place (outputs kept, skipped cells emptied); return the seconds it took."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb = read_nb(nb_path)
    for cell in nb.cells:
        if cell.cell_type == "code": cell.outputs, cell.execution_count = [], None
    shell = CaptureShell(nb_path)
    # Library deprecation notices (torch.jit.script under fvcore, ...) say nothing about the results and print
    # the library's install path: they are not kept in the outputs.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    t0 = time.perf_counter()
    with working_directory(nb_path.parent):
        try:
            shell.run_all(nb, exc_stop=True, preproc=make_skip(flags))
        except Exception as e:
            if shell.exc is None: raise
            sys.stderr.write(shell.prettytb(fname=nb_path) + "\n")
            raise SystemExit(f"execute_results: {nb_path.relative_to(ROOT)} failed; the notebook was not written")
    write_nb(nb, nb_path)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", help="notebooks to execute (default: nbs/92-98, 95 last)")
    a = p.parse_args(argv)
    paths = [Path(n).resolve() for n in a.notebooks] or [NBS / f"{n}.ipynb" for n in DEFAULT]
    missing = [str(x) for x in paths if not x.is_file()]
    if missing: raise SystemExit(f"execute_results: no such notebook: {', '.join(missing)}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    flags, failed = skip_flags(), []
    for path in paths:
        rel = path.relative_to(ROOT)
        print(f"== {rel}: executing (cells flagged {' / '.join(sorted(flags))} skipped)", flush=True)
        seconds = execute(path, flags)
        subprocess.run(["nbdev_clean", "--fname", str(path)], check=True, cwd=ROOT)
        bad = machine_paths(path)
        print(f"   {rel}: {seconds:.0f} s" + (f", {len(bad)} outputs with machine paths" if bad else ""), flush=True)
        if bad:
            failed.append(str(rel))
            for b in bad: print(f"   {rel} {b}", file=sys.stderr)
    if failed:
        print(f"execute_results: machine paths in the outputs of {', '.join(failed)}: print paths relative to the "
              "repository instead", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
