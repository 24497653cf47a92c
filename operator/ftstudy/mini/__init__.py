"""``mini``: the bundled demonstration model, a 2M-parameter Llama pretrained on English product pages.

Its weights ship in this package (``model/``, a Hugging Face model directory of a few MB), so the example study and
the paper bench run offline on a CPU; ``python -m ftstudy.mini.build`` rebuilds them (docs/science.md).
"""

from __future__ import annotations

from pathlib import Path

MINI_DIR = Path(__file__).resolve().parent / "model"
