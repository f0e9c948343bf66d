"""Allow ``python -m nnunet_resenc_plugin.cli``."""

import sys

from nnunet_resenc_plugin.cli import main

sys.exit(main())
