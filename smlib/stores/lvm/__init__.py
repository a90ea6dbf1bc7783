"""The LVM store: lvm2 wrapper, the store itself, the MGT volume."""
