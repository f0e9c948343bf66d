#!/usr/bin/env python
"""Run the side-by-side benchmark; the same as ``nnunet-resenc benchmark`` with the same options.

Example: ``python scripts/benchmark_systems.py --datasets hippocampus nuclei --seeds 0 1 --epochs 5``.
"""

import sys

from nnunet_resenc_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
