"""What `smctl help <command>` says about each parameter, and an example.

One entry per command: {parameter: (meaning, default or None when the
parameter is required or has no default)} and an example command line.
tests/toolstack/test_cli_help.py checks every command has an entry and
every parameter a command takes is described here (and nothing else).
"""

from typing import Dict, NamedTuple, Optional, Tuple

ParamDoc = Tuple[str, Optional[str]]   # (meaning, default)


class CommandDoc(NamedTuple):
    params: "Dict[str, ParamDoc]"
    example: str


FLAG_DOCS = {
    "--json": "print the result as JSON (links to missing records are null)",
    "--minimal": "print uuids only (lists: comma-separated)",
    "--progress": "show progress (bytes, rate, ETA) on stderr even when it is not a terminal",
    "--quiet": "no progress, even on a terminal",
}

SIZE = "bytes, or a number with a unit: 64MiB, 1.5GiB, 1G (binary), 500MB (decimal)"
SR = "the SR's uuid (smctl sr-list --minimal)"
VDI = "the disk's uuid (smctl vdi-list --minimal)"
VM = "the VM's uuid (smctl vm-list --minimal)"
FILTER = {"params": ("fields to print, comma-separated, or all", "all")}
NAME_DESC = ("a longer description", "empty")

DOCS: "Dict[str, CommandDoc]" = {
    "sr-create": CommandDoc({
        "type": ("the driver: file, lvm or dummy", None),
        "name-label": ("the SR's name", None),
        "name-description": NAME_DESC,
        "physical-size": (SIZE + "; passed to the driver", "0 (the driver decides)"),
        "device-config:<key>": ("driver configuration, e.g. device-config:location=/srv/sr"
                                " (file) or device-config:device=/dev/sdb (lvm)", None),
        "force": ("true: create device-config:location when that directory does not"
                  " exist (type=file)", "false"),
    }, "smctl sr-create type=file device-config:location=/srv/sr name-label=local"),
    "sr-introduce": CommandDoc({
        "type": ("the driver: file, lvm or dummy", None),
        "uuid": ("the uuid the SR already has", None),
        "name-label": ("the SR's name", None),
        "name-description": NAME_DESC,
        "device-config:<key>": ("driver configuration, as for sr-create", None),
    }, "smctl sr-introduce type=file uuid=<sr> device-config:location=/srv/sr name-label=old"),
    "sr-forget": CommandDoc({"uuid": (SR, None)}, "smctl sr-forget uuid=<sr>"),
    "sr-destroy": CommandDoc({"uuid": (SR, None)}, "smctl sr-destroy uuid=<sr>"),
    "sr-scan": CommandDoc({"uuid": (SR, None)}, "smctl sr-scan uuid=<sr>"),
    "sr-list": CommandDoc(dict(FILTER), "smctl sr-list type=file params=uuid,name-label"),
    "sr-param-list": CommandDoc({"uuid": (SR, None)}, "smctl sr-param-list uuid=<sr>"),
    "vdi-create": CommandDoc({
        "sr-uuid": (SR, None),
        "name-label": ("the disk's name", None),
        "virtual-size": (SIZE + "; rounded up to whole 2 MiB VHD blocks", None),
        "name-description": NAME_DESC,
        "read-only": ("true or false", "false"),
        "type": ("user, suspend or system", "user"),
        "sm-config:<key>": ("driver-specific settings", "none"),
    }, "smctl vdi-create sr-uuid=<sr> name-label=data virtual-size=1.5GiB"),
    "vdi-destroy": CommandDoc({
        "uuid": (VDI, None),
        "force": ("true: destroy a disk a VM uses, unplugging it", "false"),
    }, "smctl vdi-destroy uuid=<disk>"),
    "vdi-snapshot": CommandDoc({
        "uuid": (VDI, None),
        "driver-params:<key>": ("passed to the driver, e.g. driver-params:type=single",
                                "none"),
    }, "smctl vdi-snapshot uuid=<disk>"),
    "vdi-clone": CommandDoc({
        "uuid": (VDI, None),
        "new-name-label": ("the clone's name", "the disk's name"),
        "driver-params:<key>": ("passed to the driver", "none"),
    }, "smctl vdi-clone uuid=<disk> new-name-label=copy"),
    "vdi-copy": CommandDoc({
        "uuid": (VDI, None),
        "sr-uuid": ("the SR to copy to", None),
    }, "smctl vdi-copy uuid=<disk> sr-uuid=<other sr>"),
    "vdi-resize": CommandDoc({
        "uuid": (VDI, None),
        "disk-size": (SIZE + "; grow only", None),
    }, "smctl vdi-resize uuid=<disk> disk-size=2GiB"),
    "vdi-list": CommandDoc(dict(FILTER), "smctl vdi-list is-a-snapshot=true --minimal"),
    "vdi-param-list": CommandDoc({"uuid": (VDI, None)}, "smctl vdi-param-list uuid=<disk>"),
    "vdi-param-get": CommandDoc({
        "uuid": (VDI, None),
        "param-name": ("one field, as vdi-param-list names it", None),
    }, "smctl vdi-param-get uuid=<disk> param-name=virtual-size"),
    "vdi-param-set": CommandDoc({
        "uuid": (VDI, None),
        "name-label": ("the new name", "unchanged"),
        "name-description": ("the new description", "unchanged"),
    }, "smctl vdi-param-set uuid=<disk> name-label=boot"),
    "vdi-import": CommandDoc({
        "uuid": (VDI, None),
        "filename": ("the image to read", None),
        "format": ("raw or vhd (dynamic or fixed; not differencing)", "raw"),
        "exact": ("true: what the image does not cover (past a short raw file's end, a"
                  " VHD's unallocated blocks) reads as zeros afterwards; false keeps the"
                  " disk's bytes there, as xe does (a delta VHD relies on it)", "false"),
    }, "smctl vdi-import uuid=<disk> filename=disk.vhd format=vhd --progress"),
    "vdi-export": CommandDoc({
        "uuid": (VDI, None),
        "filename": ("the file to write (replaced only when complete)", None),
        "format": ("raw or vhd (a dynamic VHD)", "raw"),
        "base": ("a disk's uuid: write only the blocks that differ from it (format=vhd)",
                 "none (the whole disk)"),
        "force": ("true: replace an existing file", "false"),
    }, "smctl vdi-export uuid=<disk> filename=delta.vhd format=vhd base=<older snapshot>"),
    "vdi-revert": CommandDoc({
        "snapshot-uuid": ("the disk snapshot to go back to", None),
        "driver-params:<key>": ("passed to the driver", "none"),
    }, "smctl vdi-revert snapshot-uuid=<disk snapshot>"),
    "vm-create": CommandDoc({
        "name-label": ("the VM's name", None),
        "name-description": NAME_DESC,
        "vdi-uuids": ("existing disks, comma-separated, plugged in that order", "none"),
        "sr-uuid": ("where disk-sizes= makes new disks", "none"),
        "disk-sizes": ("sizes of new disks, comma-separated (" + SIZE + ")", "none"),
        "cd-uuid": ("a disk to plug as a CD drive", "none"),
    }, "smctl vm-create name-label=web sr-uuid=<sr> disk-sizes=8GiB,1GiB"),
    "vm-snapshot": CommandDoc({
        "uuid": (VM, None),
        "new-name-label": ("the snapshot's name", "the VM's name"),
    }, "smctl vm-snapshot uuid=<vm> new-name-label=before-upgrade"),
    "vm-revert": CommandDoc({
        "snapshot-uuid": ("the VM snapshot to go back to", None),
    }, "smctl vm-revert snapshot-uuid=<vm snapshot>"),
    "snapshot-revert": CommandDoc({
        "snapshot-uuid": ("the VM snapshot to go back to (xe's name for vm-revert)", None),
    }, "smctl snapshot-revert snapshot-uuid=<vm snapshot>"),
    "vm-destroy": CommandDoc({"uuid": (VM, None)}, "smctl vm-destroy uuid=<vm>"),
    "vm-list": CommandDoc(dict(FILTER), "smctl vm-list is-a-snapshot=false"),
    "vm-param-list": CommandDoc({"uuid": (VM, None)}, "smctl vm-param-list uuid=<vm>"),
    "vbd-list": CommandDoc(dict(FILTER), "smctl vbd-list vm-uuid=<vm>"),
}
