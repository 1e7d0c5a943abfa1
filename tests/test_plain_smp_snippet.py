"""The documented plain-smp snippet (docs/how-to/predict.md) reproduces TumorLens's masks: run as
written, with only the folder and the slice swapped, on real BRISC slices of different shapes."""

import re
from pathlib import Path

import numpy as np
import pytest

from tumorlens.inference import Segmenter
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_SEGMENTER

DOC = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "predict.md"


def _snippet() -> str:
    text = DOC.read_text()
    part = text[text.index("## Reproduce the masks with plain smp"):]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


@pytest.mark.slow
def test_the_snippet_gives_tumorlens_masks_on_real_slices(tmp_path):
    from test_medical_io import real_slice  # real BRISC test slices (read from ../shared/data, never committed)
    from PIL import Image
    folder = MODELS_DIR / BRISC_SEGMENTER
    seg = Segmenter.from_pretrained(folder, runtime="torch", precision="fp32")
    code = _snippet().replace('"models/tumorlens-unet-mobilenetv2-brisc2025"', repr(str(folder)))
    found = 0
    slices = [np.asarray(Image.open(real_slice(c)).convert("RGB")) for c in ("glioma", "meningioma", "pituitary")]
    crops = [slices[0], slices[1][:, 40:-10], slices[2][30:, :]]  # as released, tall and wide
    for i, rgb in enumerate(crops):
        path = tmp_path / f"slice{i}.png"
        Image.fromarray(rgb).save(path)
        scope: dict = {}
        exec(code.replace('"slice.png"', repr(str(path))), scope)  # noqa: S102 - the documented snippet itself
        ours = seg.segment(np.asarray(Image.open(path).convert("RGB"))).mask
        assert scope["mask"].shape == ours.shape
        differing = int((scope["mask"] != ours).sum())
        assert differing <= max(2, ours.sum() // 500), (i, differing, int(ours.sum()))
        found += int(ours.sum() > 0)
    assert found >= 2  # the comparison is about tumors, not empty masks
