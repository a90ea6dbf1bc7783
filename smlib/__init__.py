"""SMAPIv1 storage-manager drivers with in-place VDI revert."""

__version__ = "0.1.0"
