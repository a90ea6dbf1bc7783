"""LVMSR: VHD images in LVs of the VG ``VG_XenStorage-<sr_uuid>``.

The commands are TreeSR's (smlib/drivers/tree_sr.py); only the store differs.
"""

from smlib.drivers.tree_sr import TreeSR


class LVMSR(TreeSR):
    STORE = ("smlib.stores.lvm.store", "LVMStore")
    STORAGE_TYPE = "lvm"  # xenstore storage-type (sm: LVHDSR "lvm")
    DRIVER_INFO = {
        "name": "LVM",
        "description": "SR plugin which represents disks as VHD images on Logical Volumes"
                       " within a locally-attached Volume Group, with in-place vdi_revert",
        "vendor": "smlib",
        "copyright": "(C) smlib authors, LGPL-2.1",
        "driver_version": "1.0",
        "required_api_version": "1.0",
        "configuration": [{"key": "device",
                           "description": "local device path(s), comma-separated"}],
    }
