"""Converters that write datasets into nnU-Net's raw layout (``DatasetXXX_Name`` with ``dataset.json``).

``convert_msd`` handles Medical Segmentation Decathlon style NIfTI folders and ``convert_dsb2018`` the 2018 Data
Science Bowl nuclei layout. Both build the dataset in a temporary sibling folder and rename it into place at the
end, so bad input raises ``DatasetConversionError`` and leaves nothing half-written.
"""

from nnunet_resenc_plugin.datasets.dsb2018 import convert_dsb2018
from nnunet_resenc_plugin.datasets.msd import convert_msd

__all__ = ["convert_dsb2018", "convert_msd"]
