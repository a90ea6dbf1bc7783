"""VHD library (blktap dialect): images, chains, coalesce, check, raw transfer.

The contract is in docs/internals.md ("VHD library contract").
"""

from .chain import chain, coalesce, depth, export_raw, import_raw
from .check import check
from .create import create, snapshot
from .errors import VHDError
from .geometry import empty_size, required_size
from .image import Image, default_resolver, open_image

__all__ = [
    "VHDError", "Image", "create", "snapshot", "open_image", "chain", "depth",
    "coalesce", "check", "export_raw", "import_raw", "required_size", "empty_size",
    "default_resolver",
]
