"""``nnunet-resenc convert``: convert an MSD or DSB 2018 dataset into nnU-Net's raw layout."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from nnunet_resenc_plugin.errors import DatasetConversionError

logger = logging.getLogger(__name__)

FORMATS = ("msd", "dsb2018")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``convert`` options to ``parser``."""
    parser.add_argument("format", choices=FORMATS, help="Source layout: MSD NIfTI folders or DSB 2018 nuclei PNGs.")
    parser.add_argument("source", type=Path, help="Source folder (MSD: with imagesTr/ and labelsTr/; "
                        "DSB 2018: stage1_train/ or its parent).")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset ID, 1 to 999.")
    parser.add_argument("--name", help="Dataset name (default: the MSD folder name without 'TaskXX_', "
                        "or 'NucleiDSB2018').")
    parser.add_argument("--raw-dir", type=Path, default=None,
                        help="nnU-Net raw folder to write into (default: $nnUNet_raw).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing dataset folder.")
    parser.add_argument("--cases", type=int, default=None, metavar="N",
                        help="Convert only the first N cases in sorted order.")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="MSD only: label names in value order starting with background 0, when the source "
                        "has no dataset.json (for the hippocampus: background Anterior Posterior).")
    parser.add_argument("--channel-names", nargs="+", metavar="NAME",
                        help="MSD only: one name per image channel; 'CT' selects CT normalisation "
                        "(default: the source dataset.json 'modality', else 'image').")
    parser.add_argument("--channels", choices=("auto", "gray", "rgb"), default="auto",
                        help="DSB 2018 only: write grayscale or RGB PNGs; 'auto' writes grayscale when every "
                        "image has equal red, green and blue channels (default: auto).")


def run(args: argparse.Namespace) -> int:
    """Convert the dataset and return the exit code."""
    raw_dir = args.raw_dir
    if raw_dir is None:
        if not os.environ.get("nnUNet_raw"):
            raise DatasetConversionError(
                "nnUNet_raw is not set; export nnUNet_raw=/path/to/nnUNet_raw or pass --raw-dir."
            )
        raw_dir = Path(os.environ["nnUNet_raw"])

    if args.format == "msd":
        from nnunet_resenc_plugin.datasets.msd import convert_msd

        target = convert_msd(
            args.source,
            raw_dir,
            args.dataset_id,
            name=args.name,
            labels=args.labels,
            channel_names=args.channel_names,
            overwrite=args.overwrite,
            max_cases=args.cases,
        )
    else:
        from nnunet_resenc_plugin.datasets.dsb2018 import convert_dsb2018

        if args.labels or args.channel_names:
            raise DatasetConversionError("--labels and --channel-names apply to MSD sources only.")
        target = convert_dsb2018(
            args.source,
            raw_dir,
            args.dataset_id,
            name=args.name or "NucleiDSB2018",
            channels=args.channels,
            overwrite=args.overwrite,
            max_cases=args.cases,
        )
    print(target)
    return 0
