"""SMAPIv1 storage-manager drivers with in-place VDI revert."""
