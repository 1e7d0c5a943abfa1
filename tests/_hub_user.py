"""What a stranger does with the published repos, by repo id only (run in a process that sees only an
offline HF cache): the standard loaders, the transformers pipelines with the repos' own code, and
TumorLens's Pipeline, on real slices. Prints one JSON object for the test to judge.

usage: python _hub_user.py SEG_REPO LGG_REPO CLS_REPO --brisc SLICE... --lgg-slices SLICE..."""

from __future__ import annotations

import argparse
import builtins
import json
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
import transformers
from huggingface_hub import hf_hub_download
from transformers import pipeline


def _no_prompt(*_):
    raise SystemExit("a loader asked on stdin whether to run the repo's code")


def _masks_agree(pipe, segmenter, paths) -> list[int]:
    """Pixels where the transformers pipeline's mask and TumorLens's differ, per slice."""
    differ = []
    for path in paths:
        ours = segmenter.segment(path).mask
        found = pipe(path)
        theirs = np.asarray(found[0]["mask"]) > 0 if found else np.zeros_like(ours)
        assert not found or (found[0]["label"] == "tumor" and 0 < found[0]["score"] <= 1)
        differ.append(int((theirs != ours).sum()))
    return differ


def main() -> None:
    builtins.input = _no_prompt  # transformers must never ask: plain loads take the library code
    parser = argparse.ArgumentParser()
    parser.add_argument("seg")
    parser.add_argument("lgg")
    parser.add_argument("cls")
    parser.add_argument("--brisc", nargs="+")
    parser.add_argument("--lgg-slices", nargs="+")
    args = parser.parse_args()
    from tumorlens import models
    from tumorlens.inference import Classifier, Pipeline, Segmenter
    from tumorlens.preprocess import decode_image
    out = {}
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for key, repo in (("seg", args.seg), ("lgg", args.lgg)):
            plain = smp.from_pretrained(repo).eval()(x)
            ours = models.load_segmenter(repo)[0](x)
            out[f"smp_{key}_max_abs_diff"] = float((plain.float() - ours.float()).abs().max())
        t = timm.create_model(f"hf-hub:{args.cls}", pretrained=True).eval()(x)
        h = transformers.AutoModelForImageClassification.from_pretrained(args.cls).eval()(pixel_values=x).logits
        out["timm_vs_transformers_max_abs_diff"] = float((t - h).abs().max())
    out["plain_pipeline_labels"] = sorted(o["label"] for o in pipeline("image-classification", model=args.cls)(
        args.brisc[0], top_k=4))

    clf = Classifier.from_pretrained(args.cls, runtime="torch", precision="fp32")
    remote = pipeline("image-classification", model=args.cls, trust_remote_code=True)
    diffs = []
    for path in args.brisc:
        ours = dict(zip(clf.label_names, clf.probabilities([decode_image(path)])[0].tolist()))
        theirs = {o["label"]: o["score"] for o in remote(path, top_k=len(ours))}
        diffs.append(max(abs(ours[k] - theirs[k]) for k in ours))
    out["classifier_pipeline_max_prob_diff"] = max(diffs)
    out["classifier_processor"] = type(remote.image_processor).__name__

    for key, repo, paths in (("seg", args.seg, args.brisc), ("lgg", args.lgg, args.lgg_slices)):
        segmenter = Segmenter.from_pretrained(repo, runtime="torch", precision="fp32")
        # a segmenter with a timm universal encoder ships without transformers code (smp would hand the
        # transformers keys of config.json on to timm.create_model): nothing to compare for it
        if "auto_map" in json.loads(Path(hf_hub_download(repo, "config.json")).read_text()):
            pipe = pipeline("image-segmentation", model=repo, trust_remote_code=True)
            out[f"{key}_pipeline_class"] = type(pipe).__name__
            out[f"{key}_pipeline_px_differ"] = _masks_agree(pipe, segmenter, paths)
        else:
            out[f"{key}_pipeline_class"] = None
        out[f"{key}_tumor_px"] = [int(segmenter.segment(p).mask.sum()) for p in paths]

    result = Pipeline.from_pretrained(args.seg, args.cls).analyze(args.brisc[0])
    out["tumorlens_pipeline"] = {"predicted": result.predicted_class, "area_px": result.segmentation.area_px}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
