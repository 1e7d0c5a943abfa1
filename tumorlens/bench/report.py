"""results.md, the plots beside it, and best/worst case grids (those show dataset images, so they
go to the run's output folder and are never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..visualize import plot_confusion_matrix


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# -- plots -----------------------------------------------------------------------------------
def plot_confusion(cm, names, title: str, path: Path) -> Path:
    return plot_confusion_matrix(cm, names, title, path, dpi=110)


def plot_dice_histograms(panels: list[tuple[str, list[float]]], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=110, squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        v = np.asarray(values, dtype=float)
        ax.hist(v, bins=np.linspace(0, 1, 21), color="#4878a8", edgecolor="white")
        ax.axvline(v.mean(), color="#c03030", label=f"mean {v.mean():.3f}")
        ax.axvline(np.median(v), color="#30a030", ls="--", label=f"median {np.median(v):.3f}")
        ax.set_title(f"{title} (n={len(v)})", fontsize=10)
        ax.set_xlabel("Dice")
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_speed(speed: dict, path: Path) -> Path | None:
    rows = [r for r in speed.get("rows", []) if r.get("p50_ms") and not r.get("error")]
    if not rows:
        return None
    plt = _plt()
    labels = [f"{r['name']} [{r['runtime']}]" for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2), dpi=110)
    ax.barh(range(len(rows)), [r["p50_ms"] for r in rows], color=["#c05030" if "seed" in r["name"] else "#4878a8"
                                                               for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log scale; blue: TumorLens, red: seeds' architectures)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(results: dict, out: Path) -> list[Path]:
    made = []
    cls = (results.get("brisc") or {}).get("classification")
    if cls:
        made.append(plot_confusion(cls["confusion_matrix"], cls["class_names"],
                                   f"BRISC test: accuracy {cls['accuracy'] * 100:.2f}%", out / "brisc_confusion.png"))
    fs = (results.get("figshare") or {}).get("classification")
    if fs:
        made.append(plot_confusion(fs["confusion_matrix"], fs["class_names"],
                                   f"Figshare 5-fold CV, {fs.get('start', 'imagenet')} start (folds {fs['folds']}): "
                                   f"{fs['accuracy'] * 100:.2f}%",
                                   out / "figshare_confusion.png"))
    panels = []
    seg = (results.get("brisc") or {}).get("segmentation")
    if seg and seg.get("dice_values"):
        panels.append(("BRISC test, per slice", seg["dice_values"]))
    lgg = results.get("lgg") or {}
    if lgg.get("dice_values"):
        panels.append(("LGG test, per tumor slice", lgg["dice_values"]))
    if lgg.get("dice_per_patient"):
        panels.append(("LGG test, per patient", list(lgg["dice_per_patient"].values())))
    if panels:
        made.append(plot_dice_histograms(panels, out / "dice_histograms.png"))
    if results.get("speed"):
        p = plot_speed(results["speed"], out / "speed.png")
        if p:
            made.append(p)
    return made


# -- best / worst cases ------------------------------------------------------------------------
def case_grid(items: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: Path, cols: int = 4) -> Path:
    """items: (rgb, truth, prediction, caption). Truth outlined green, prediction red."""
    from ..visualize import outline
    plt = _plt()
    rows = max(1, int(np.ceil(len(items) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.5 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (rgb, truth, pred, caption) in zip(axes.ravel(), items):
        img = rgb.copy()
        img[outline(truth)] = (40, 220, 40)
        img[outline(pred)] = (240, 40, 40)
        ax.imshow(img)
        ax.set_title(caption, fontsize=7)
    fig.suptitle("green: expert mask, red: prediction", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _best_worst(records: list[dict], k: int) -> tuple[list[dict], list[dict]]:
    order = sorted(records, key=lambda r: r["dice"])
    return order[::-1][:k], order[:k]


def _render_cases(model: str, records: list[dict], paths: dict[str, tuple], out: Path, k: int = 8) -> list[Path]:
    from ..inference import Segmenter
    from ..preprocess import decode_image, decode_mask
    seg = Segmenter.from_pretrained(model)
    made = []
    for name, chosen in zip(("best", "worst"), _best_worst(records, k)):
        items = []
        for r in chosen:
            img_path, mask_path = paths[r["file_name"]]
            rgb = decode_image(img_path)
            items.append((rgb, decode_mask(mask_path).astype(bool), seg.segment(rgb).mask,
                          f"{r['file_name'][:34]}\nDice {r['dice']:.3f}"))
        made.append(case_grid(items, out / f"{name}.png"))
    return made


def brisc_cases(model: str, records: list[dict], root, out: Path) -> list[Path]:
    from ..data import brisc2025
    import datasets
    test = brisc2025.load_segmentation(root)["test"]
    raw = test.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    paths = {n: (i["path"], m["path"]) for n, i, m in zip(raw["file_name"], raw["image"], raw["mask"])}
    return _render_cases(model, records, paths, out)


def lgg_cases(model: str, records: list[dict], root, out: Path) -> list[Path]:
    from ..data import lgg
    import datasets
    test = lgg.load(root)["test"]
    raw = test.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    paths = {n: (i["path"], m["path"]) for n, i, m in zip(raw["file_name"], raw["image"], raw["mask"])}
    return _render_cases(model, [r for r in records if r["tumor"]], paths, out)


# -- markdown ------------------------------------------------------------------------------------
def _f(x, pct: bool = False, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:.2f}%" if pct else f"{x:.{digits}f}"


def _met(t: dict) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[t["met"]]


def write_markdown(results: dict, path: Path) -> Path:
    L = ["# TumorLens benchmark", "",
         f"Generated {results['generated']} by `{results['command']}` on {results['hardware']['cpu']} "
         f"({results['hardware']['threads']} threads, AVX-512 bf16: {results['hardware']['avx512_bf16']}, "
         f"AMX: {results['hardware']['amx_bf16']}), torch {results['hardware']['torch']}."
         + ("" if results["complete"] else " **Subset run: numbers are not comparable.**"), ""]
    seeds = results["seeds"]
    L += ["## Targets", "", "| target | ours | wanted | |", "|---|---|---|---|"]
    for name, t in results["targets"].items():
        op, wanted = t["target"].split()
        if name.startswith("speed"):
            show = lambda x: f"{x:.2f}x faster"  # noqa: E731
        else:
            show = lambda x: _f(x, pct=("accuracy" in name or "rate" in name))  # noqa: E731
        shown = "n/a" if t["value"] is None else show(t["value"])
        L.append(f"| {name} | {shown} | {op} {show(float(wanted))} | {_met(t)} |")
    b = results.get("brisc") or {}
    if b:
        L += ["", "## BRISC 2025 (official test split)", ""]
        s = b.get("segmentation")
        if s:
            d = s.get("deduplicated") or {}
            L += ["| segmentation | mean Dice | median Dice | mIoU | pixel acc. | healthy slices masked (>= 50 px) |",
                  "|---|---|---|---|---|---|",
                  f"| **TumorLens** {s['model']} | {_f(s['dice_mean'])} | {_f(s['dice_median'])} | {_f(s['miou'])} | "
                  f"{_f(s['pixel_accuracy'])} | {s['healthy']['masked']}/{s['healthy']['n']} |"]
            if d.get("n"):
                L.append(f"| TumorLens, de-duplicated test (n={d['n']}) | {_f(d['dice']['mean'])} | "
                         f"{_f(d['dice']['median'])} | | | |")
            x = s.get("without_extra_data_copies") or {}
            if x.get("n"):
                L.append(f"| TumorLens, test slices the audit finds in the added {x['extra_train'].capitalize()} data "
                         f"removed (n={x['n']}) | {_f(x['dice']['mean'])} | {_f(x['dice']['median'])} | | | |")
            for sd in seeds["brisc_segmentation"]:
                L.append(f"| {sd['system']} | {_f(sd.get('dice'))} | | | | "
                         f"{_f(sd.get('healthy_masked_rate'), pct=True) if sd.get('healthy_masked_rate') else ''} |")
            L += _dice_definition_lines(s)
        c = b.get("classification")
        if c:
            d = c.get("deduplicated") or {}
            L += ["", "| classification | accuracy | macro F1 |", "|---|---|---|",
                  f"| **TumorLens** {c['model']} | {_f(c['accuracy'], True)} | {_f(c['macro_f1'])} |"]
            if d.get("n"):
                L.append(f"| TumorLens, de-duplicated test (n={d['n']}) | {_f(d['accuracy'], True)} | {_f(d['macro_f1'])} |")
            x = c.get("without_extra_data_copies") or {}
            if x.get("n"):
                L.append(f"| TumorLens, test images the audit finds in the added {x['extra_train'].capitalize()} data "
                         f"removed (n={x['n']}) | {_f(x['accuracy'], True)} | {_f(x['macro_f1'])} |")
            for v in c.get("variants") or []:  # stored by `evaluate --variant-of`, not re-scored here
                L.append(f"| TumorLens variant, not shipped: {v['name']} ({v.get('input') or 'whole slice'}; "
                         f"de-duplicated {_f(v.get('dedup_accuracy'), True)}) | {_f(v['accuracy'], True)} | {_f(v['macro_f1'])} |")
            for sd in seeds["brisc_classification"]:
                L.append(f"| {sd['system']} | {_f(sd['accuracy'], True)} | |")
    f = results.get("figshare") or {}
    if f:
        L += ["", "## Figshare (Cheng et al.): patient-wise 5-fold cross-validation", "",
              f"{f['protocol']}. Headline (bold): {f.get('headline_rule', '')}.", "",
              "| start | task | ours | per fold | seed |", "|---|---|---|---|---|"]
        for name, st in (f.get("starts") or {}).items():
            for task, label in (("classification", "3-class accuracy"), ("segmentation", "mean Dice")):
                r = st.get(task)
                if not r:
                    continue
                pct = task == "classification"
                value = _f(r["accuracy"] if pct else r["dice_mean"], pct)
                if (f.get(task) or {}).get("start") == name:
                    value = f"**{value}**"
                per_fold = r["accuracy_per_fold"] if pct else r["dice_mean_per_fold"]
                seed = (f"{seeds['figshare_classification'][0]['system']}: "
                        f"{_f(seeds['figshare_classification'][0]['accuracy'], True)}") if pct else ""
                L.append(f"| {name} | {label} (folds {r['folds']}, n={r['n']}) | {value} | "
                         + ", ".join(_f(v, pct) for v in per_fold.values()) + f" | {seed} |")
        if not (f.get("classification") or f.get("segmentation")):
            L.append("| no fold has been run yet | | | | |")
        L.append("")
        for name, st in (f.get("starts") or {}).items():
            if st.get("per_fold"):
                L.append(f"- {name} start: {st['init']}. Stored in `{st['stored_in']}` (made "
                         f"{', '.join(sorted(set(w[:10] for w in st['when'])))}); re-run with `{st['rerun']}`.")
                for kind, tr in (st.get("starts_trained") or {}).items():
                    L.append(f"  The {kind} start: `{tr['command']}` ({tr['epochs']} epochs, best {tr['best_epoch']}; "
                             f"{tr['train_seconds']} s to its best checkpoint).")
    g = results.get("lgg") or {}
    if g and not g.get("missing"):
        L += ["", "## LGG kaggle_3m (patient-wise test split)", "",
              "| | per patient mean Dice | per tumor slice mean Dice | median per slice | healthy slices masked | Dice as published |",
              "|---|---|---|---|---|---|",
              f"| **TumorLens** {g['model']} (n={g['n_patients']} patients, {g['n_tumor_slices']} tumor slices) | "
              f"{_f(g['dice_per_patient_mean'])} | {_f(g['dice_mean'])} | {_f(g['dice_median'])} | "
              f"{g['healthy']['masked']}/{g['healthy']['n']} | |"]
        for sd in seeds["lgg_segmentation"]:
            published = sd.get("dice_per_patient", sd.get("dice"))
            L.append(f"| {sd['system']} | {_f(sd.get('dice_per_patient'))} | | | | {_f(published)} ({sd['source']}) |")
        L += _dice_definition_lines(g)
    elif g.get("missing"):
        L += ["", "## LGG", "", g["missing"]]
    sp = results.get("speed")
    if sp:
        from .speed import format_speed_table
        L += ["", "## Speed (same run, same machine; seeds rebuilt with random weights)", "", format_speed_table(sp)]
    a = results.get("audit")
    if a:
        L += ["", "## Leakage audit", "", a["method"] + ".", "", "Thresholds: " + a["thresholds_chosen"] + ".", "",
              "| a | b | scope | n a | n b | exact pairs | near pairs | b images with a duplicate |",
              "|---|---|---|---|---|---|---|---|"]
        for r in a["comparisons"]:
            if r["exact_pairs"] or r["near_pairs"] or r["scope"] == "within":
                L.append(f"| {r['a']} | {r['b']} | {r['scope']} | {r['n_a']} | {r['n_b']} | {r['exact_pairs']} | "
                         f"{r['near_pairs']} | {r['b_images_with_duplicate']} |")
        L += ["", "Comparisons with no pair at all are left out of this table; all are in results.json, the pair "
                  f"lists in `{a['lists']}`."]
    if results.get("plots"):
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]]
    path.write_text("\n".join(L) + "\n")
    return path


def _dice_definition_lines(s: dict) -> list[str]:
    """The three Dice definitions and Dice by tumor size of one segmentation result (eval.json keys)."""
    lines = []
    defs = s.get("dice_definitions")
    if defs:
        lines += ["", "Dice definitions (TumorLens; the seeds report the first): "
                  + "; ".join(f"{name.replace('_', ' ')} {_f(d['value'])} (n={d['n_slices']})" for name, d in defs.items())
                  + ". Per tumor slice is the mean over slices with a tumor; all slices adds each healthy slice as 1 "
                    "when left empty, else 0; pooled is one Dice over every pixel."]
    size = s.get("by_size")
    if size and size.get("groups"):
        lines += ["", "Mean Dice by tumor size (tertiles of the true area): " + ", ".join(
            f"{k} ({size['groups'][k]}) {_f(size[k]['dice']['mean'])} (n={size[k]['n']})"
            for k in ("small", "medium", "large") if k in size) + "."]
    return lines

