"""The published numbers of the systems TumorLens is measured against, each with where it comes from.
These are quoted, not re-measured (the seeds' weights are not available here); speed is the exception:
the seeds' architectures are rebuilt with random weights and timed beside ours (see speed.py)."""

SEEDS = {
    "brisc_segmentation": [
        {"system": "seed 001: U-Net", "dice": 0.8822, "source": "issue #8: BRISC 2025 test, 860 slices"},
        {"system": "public smp U-Net trained on tumor slices only", "healthy_masked_rate": 0.67,
         "source": "issue #8: share of healthy BRISC test slices given a mask"},
    ],
    "brisc_classification": [
        {"system": "seed: DenseNet-121", "accuracy": 0.9750, "source": "issue #9: BRISC 2025 test, 1000 images"},
        {"system": "seed: EfficientNet-B0", "accuracy": 0.9730, "source": "issue #9: BRISC 2025 test, 1000 images"},
        {"system": "BRISC paper: EfficientNet-B0", "accuracy": 0.992, "source": "issue #9, quoting Fateh et al. 2025"},
    ],
    "figshare_classification": [
        {"system": "Figshare seed", "accuracy": 0.8249, "source": "issue #9 (its split is not stated)"},
    ],
    "lgg_segmentation": [
        {"system": "seed 004: U-Net/VGG16", "dice": 0.812, "source": "issue #8: LGG kaggle_3m"},
        {"system": "Buda et al. 2019", "dice_per_patient": 0.82,
         "source": "Comput Biol Med 109:218-225, mean Dice over test volumes"},
    ],
}

TARGETS = {
    "brisc_dice_mean": 0.885,
    "brisc_healthy_masked_rate": 0.05,
    "brisc_accuracy": 0.99,
    "figshare_accuracy": 0.97,
    "figshare_dice_mean": 0.85,
    "lgg_dice_per_patient_mean": 0.86,
    "speed_vs_seed004": 5.0,
    "speed_vs_seed001_pair": 10.0,
}
