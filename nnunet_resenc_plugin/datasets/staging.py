"""Atomic creation of a dataset folder: build it in a temporary sibling, then rename it into place.

A conversion that fails halfway leaves no partial ``DatasetXXX_Name`` folder behind, because the target path
only appears through the final rename, which is atomic on one file system.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nnunet_resenc_plugin.errors import DatasetConversionError

logger = logging.getLogger(__name__)

_STAGING_PREFIX = ".staging-"


def check_target_is_free(target: Path, overwrite: bool) -> None:
    """Raise if ``target`` exists and ``overwrite`` is false.

    Args:
        target: Dataset folder that a conversion will create.
        overwrite: Whether an existing folder may be replaced.

    Raises:
        DatasetConversionError: If the target exists and may not be replaced, or is a file.
    """
    if target.is_file():
        raise DatasetConversionError(f"The output path {target} is a file; remove it or choose another dataset ID.")
    if target.exists() and not overwrite:
        raise DatasetConversionError(
            f"The dataset folder {target} already exists. Pass --overwrite (overwrite=True) to replace it, "
            "or choose another dataset ID."
        )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` when the block succeeds.

    On an exception the temporary folder is deleted and ``target`` is left as it was. With ``overwrite``, an
    existing ``target`` is replaced only after the new folder is complete.

    Args:
        target: Final folder path.
        overwrite: Whether an existing ``target`` may be replaced.

    Yields:
        The temporary folder to write into.

    Raises:
        DatasetConversionError: If ``target`` exists and ``overwrite`` is false.
    """
    target = Path(target)
    check_target_is_free(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{target.name}-", dir=target.parent))
    # mkdtemp creates the folder as 0o700; give the result the permissions of a folder made by mkdir.
    os.chmod(staging, 0o777 & ~_current_umask())
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Check again: another process may have created the target while this one was converting.
    check_target_is_free(target, overwrite)
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{target.name}-old-", dir=target.parent))
        os.rename(target, retired / target.name)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
        logger.info("Replaced %s", target)
    else:
        os.rename(staging, target)
