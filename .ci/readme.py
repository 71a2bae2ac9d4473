"""Write README.md from nbs/index.ipynb (its markdown cells, in order), as nbdev_readme would
without quarto. `python .ci/readme.py --check` exits 1 when README.md is out of date."""
import json, pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent
nb = json.loads((root / "nbs" / "index.ipynb").read_text(encoding="utf-8"))
text = "\n\n".join("".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "markdown")
text = "<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n" + text + "\n"
readme = root / "README.md"
if "--check" in sys.argv:
    if readme.read_text(encoding="utf-8") != text:
        sys.exit("README.md is out of date: run `python .ci/readme.py` and commit it")
else:
    readme.write_text(text, encoding="utf-8")
