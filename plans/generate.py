"""Regenerate the shipped preset plans in this folder.

Each file is planned by ``ResEncPluginPlanner`` for a synthetic dataset whose fingerprint describes a typical
case: 3D images of 192 x 192 x 192 voxels at 1 mm, and 2D images of 512 x 512 pixels. Apply one to a dataset
with ``nnunet-resenc apply-plans plans/<file>.json -d ID``.

Usage::

    python plans/generate.py [--presets S M L XL]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TEMPLATES = {
    "3d": {"shape": [192, 192, 192], "spacing": [1.0, 1.0, 1.0], "configuration": "3d_fullres"},
    "2d": {"shape": [1, 512, 512], "spacing": [999.0, 1.0, 1.0], "configuration": "2d"},
}
# numTraining of the synthetic dataset; large enough that the 5% batch cap does not bind.
TEMPLATE_CASES = 1000


def _write_dataset(root: Path, shape: list[int], spacing: list[float]) -> None:
    import SimpleITK as sitk

    raw = root / "raw" / "Dataset999_Template"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    placeholder = sitk.GetImageFromArray(np.zeros((4, 4, 4), dtype=np.float32))
    sitk.WriteImage(placeholder, str(raw / "imagesTr" / "case_000_0000.nii.gz"))
    sitk.WriteImage(sitk.Cast(placeholder, sitk.sitkUInt8), str(raw / "labelsTr" / "case_000.nii.gz"))
    dataset_json = {"channel_names": {"0": "image"}, "labels": {"background": 0, "foreground": 1},
                    "numTraining": TEMPLATE_CASES, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    preprocessed = root / "preprocessed" / "Dataset999_Template"
    preprocessed.mkdir(parents=True)
    intensity = {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                 "percentile_99_5": 1.0, "std": 1.0}
    fingerprint = {"spacings": [spacing], "shapes_after_crop": [shape], "median_relative_size_after_cropping": 1.0,
                   "foreground_intensity_properties_per_channel": {"0": intensity}}
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))


def generate(preset: str, dimension: str) -> Path:
    """Plan one template and write ``ResEnc<preset>_<dimension>.json``; return its path."""
    template = TEMPLATES[dimension]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["nnUNet_raw"] = str(root / "raw")
        os.environ["nnUNet_preprocessed"] = str(root / "preprocessed")
        _write_dataset(root, template["shape"], template["spacing"])
        from nnunet_resenc_plugin.planning.planner import ResEncPluginPlanner

        plans = ResEncPluginPlanner(999, preset=preset, plans_name=f"nnUNetPluginResEnc{preset}Plans").plan_experiment()
    configuration = template["configuration"]
    plans = json.loads(json.dumps(plans))
    plans["dataset_name"] = f"template_{dimension}"
    plans["configurations"] = {configuration: plans["configurations"][configuration]}
    plans["resenc_plugin"]["estimated_peak_memory_gb"] = {
        configuration: plans["resenc_plugin"]["estimated_peak_memory_gb"][configuration]}
    target = HERE / f"ResEnc{preset}_{dimension}.json"
    target.write_text(json.dumps(plans, indent=2) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["S", "M", "L", "XL"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for preset in args.presets:
        for dimension in TEMPLATES:
            logging.info("wrote %s", generate(preset, dimension))


if __name__ == "__main__":
    main()
