"""FileSR: VHD files in a directory; the commands are TreeSR's."""

from smlib.drivers.tree_sr import TreeSR


class FileSR(TreeSR):
    STORE = ("smlib.stores.file", "FileStore")
    # VHD files grow as they are written (stock FileSR says the same); LVMSR
    # inflates a writable leaf to full size, so it does not.
    EXTRA_CAPABILITIES = ("THIN_PROVISIONING",)
    DRIVER_INFO = {
        "name": "File",
        "description": "SR plugin which stores VHD disks as files in a directory,"
                       " with in-place vdi_revert",
        "vendor": "smlib",
        "copyright": "(C) smlib authors, LGPL-2.1",
        "driver_version": "1.0",
        "required_api_version": "1.0",
        "configuration": [{"key": "location", "description": "directory holding the SR"}],
    }
