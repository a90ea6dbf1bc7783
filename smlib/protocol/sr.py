"""Base classes every driver derives from: the parsed call and the SR.

A driver overrides the SMAPIv1 commands it implements; every other command
answers Unimplemented (38), which is what makes xapi fall back (for
vdi_revert: to clone). Capabilities are derived from what is overridden,
so a driver cannot advertise an operation it does not have.
"""

from smlib.protocol.errors import SRError


class Call:
    """One parsed request: the struct xapi passes as the methodCall's param.

    smapi has already checked the keys the command needs and their types;
    optional keys that are absent read as None (strings) or {} (maps).
    """

    def __init__(self, params: dict) -> None:
        self.params = params
        self.command: str = params.get("command", "")
        self.args: list[str] = list(params.get("args") or [])
        self.device_config: dict[str, str] = dict(params.get("device_config") or {})
        self.host_ref: str | None = params.get("host_ref")
        self.session_ref: str | None = params.get("session_ref")
        self.sr_ref: str | None = params.get("sr_ref")
        self.sr_uuid: str | None = params.get("sr_uuid")
        self.vdi_ref: str | None = params.get("vdi_ref")
        self.vdi_uuid: str | None = params.get("vdi_uuid")
        self.vdi_location: str | None = params.get("vdi_location")
        self.vdi_type: str | None = params.get("vdi_type")
        self.new_uuid: str | None = params.get("new_uuid")
        self.subtask_of: str | None = params.get("subtask_of")
        self.vdi_on_boot: str | None = params.get("vdi_on_boot")
        self.vdi_allow_caching: str | None = params.get("vdi_allow_caching")
        self.local_cache_sr: str | None = params.get("local_cache_sr")
        self.sr_sm_config: dict[str, str] = dict(params.get("sr_sm_config") or {})
        self.vdi_sm_config: dict[str, str] = dict(params.get("vdi_sm_config") or {})
        self.driver_params: dict[str, str] = dict(params.get("driver_params") or {})

    def arg(self, index: int, what: str) -> str:
        """args[index], or BadRequest naming what was expected there."""
        if index >= len(self.args):
            raise SRError.from_name(
                "BadRequest", opterr=f"{self.command}: args[{index}] ({what}) is missing"
            )
        return self.args[index]

    def size_arg(self, index: int, what: str) -> int:
        """args[index] as a byte count: ASCII digits only (str.isdigit() also
        takes '\u00b2' and other scripts' digits), else VDISize (79)."""
        text = self.arg(index, what)
        if not text or not all("0" <= c <= "9" for c in text):
            raise SRError.from_name("VDISize", opterr=f"size {text!r} is not a byte count")
        return int(text)

    def __repr__(self) -> str:
        return f"Call({self.command!r}, sr={self.sr_uuid!r}, vdi={self.vdi_uuid!r})"


# Command -> capability it advertises when a driver implements it.
CAPABILITIES: "dict[str, str]" = {
    "sr_probe": "SR_PROBE",
    "sr_update": "SR_UPDATE",
    "vdi_create": "VDI_CREATE",
    "vdi_delete": "VDI_DELETE",
    "vdi_attach": "VDI_ATTACH",
    "vdi_detach": "VDI_DETACH",
    "vdi_activate": "VDI_ACTIVATE",
    "vdi_deactivate": "VDI_DEACTIVATE",
    "vdi_clone": "VDI_CLONE",
    "vdi_snapshot": "VDI_SNAPSHOT",
    "vdi_resize": "VDI_RESIZE",
    "vdi_introduce": "VDI_INTRODUCE",
    "vdi_update": "VDI_UPDATE",
    "vdi_revert": "VDI_REVERT",
    "vdi_generate_config": "VDI_GENERATE_CONFIG",
    "vdi_resize_online": "VDI_RESIZE_ONLINE",
    "vdi_enable_cbt": "VDI_CONFIG_CBT",
}


def _unimplemented(command: str):
    def method(self: "SR") -> object:
        raise SRError.from_name(
            "Unimplemented", opterr=f"{type(self).__name__} does not implement {command}"
        )

    method.__name__ = method.__qualname__ = command
    method.__doc__ = f"{command}: Unimplemented (38) unless the driver overrides it."
    return method


class SR:
    """A storage repository driver. One instance serves one call."""

    DRIVER_INFO: dict = {
        "name": "SR",
        "description": "base storage-manager driver",
        "vendor": "",
        "copyright": "",
        "driver_version": "0.1",
        "required_api_version": "1.0",
        "configuration": [],
    }
    # Capabilities that are not a command (e.g. "VDI_RESET_ON_BOOT/2").
    EXTRA_CAPABILITIES: "tuple[str, ...]" = ()
    # sr_content_type's answer: sm's sr_vditype ("vhd" for VHD SRs, "phy" ...).
    CONTENT_TYPE = ""
    # Request keys that must be uuids when present (143 otherwise): those the
    # driver lets reach a path or a command line.
    UUID_KEYS: "tuple[str, ...]" = ()

    def __init__(self, call: Call) -> None:
        self.call = call

    @classmethod
    def capabilities(cls) -> "list[str]":
        implemented = [
            capability
            for command, capability in CAPABILITIES.items()
            if getattr(cls, command) is not getattr(SR, command)
        ]
        return implemented + list(cls.EXTRA_CAPABILITIES)

    def sr_get_driver_info(self) -> dict:
        info = {**SR.DRIVER_INFO, **self.DRIVER_INFO}
        return {
            "name": info["name"],
            "description": info["description"],
            "vendor": info["vendor"],
            "copyright": info["copyright"],
            "driver_version": info["driver_version"],
            "required_api_version": info["required_api_version"],
            "capabilities": self.capabilities(),
            "configuration": [
                {"key": c["key"], "description": c["description"]} for c in info["configuration"]
            ],
        }

    sr_create = _unimplemented("sr_create")
    sr_delete = _unimplemented("sr_delete")
    sr_attach = _unimplemented("sr_attach")
    sr_detach = _unimplemented("sr_detach")
    sr_scan = _unimplemented("sr_scan")
    sr_probe = _unimplemented("sr_probe")
    sr_update = _unimplemented("sr_update")
    vdi_create = _unimplemented("vdi_create")
    vdi_delete = _unimplemented("vdi_delete")
    vdi_attach = _unimplemented("vdi_attach")
    vdi_detach = _unimplemented("vdi_detach")
    vdi_activate = _unimplemented("vdi_activate")
    vdi_deactivate = _unimplemented("vdi_deactivate")
    vdi_clone = _unimplemented("vdi_clone")
    vdi_snapshot = _unimplemented("vdi_snapshot")
    vdi_resize = _unimplemented("vdi_resize")
    vdi_introduce = _unimplemented("vdi_introduce")
    vdi_update = _unimplemented("vdi_update")
    vdi_revert = _unimplemented("vdi_revert")
    vdi_generate_config = _unimplemented("vdi_generate_config")
    vdi_attach_from_config = _unimplemented("vdi_attach_from_config")
    vdi_detach_from_config = _unimplemented("vdi_detach_from_config")
    vdi_compose = _unimplemented("vdi_compose")
    vdi_resize_online = _unimplemented("vdi_resize_online")
    vdi_enable_cbt = _unimplemented("vdi_enable_cbt")
    vdi_disable_cbt = _unimplemented("vdi_disable_cbt")
    vdi_data_destroy = _unimplemented("vdi_data_destroy")
    vdi_list_changed_blocks = _unimplemented("vdi_list_changed_blocks")
    vdi_list = _unimplemented("vdi_list")  # extension: not sent by xapi

    # What sm's base classes answer for every driver (SRCommand.py).

    def vdi_epoch_begin(self) -> None:
        """Sent on every VM start: nothing to do unless the VDI resets on
        boot, which needs VDI_RESET_ON_BOOT/2 (Unimplemented without it)."""
        if self.call.vdi_on_boot != "reset":
            return None
        raise SRError.from_name(
            "Unimplemented",
            opterr=f"{type(self).__name__} cannot reset {self.call.vdi_uuid} on boot",
        )

    def vdi_epoch_end(self) -> None:
        """Sent when a VM stops: nothing to do (as sm)."""
        return None

    def sr_content_type(self) -> str:
        return self.CONTENT_TYPE


def vdi_info(uuid: str, location: str, **extra: object) -> dict:
    """The struct create/snapshot/clone/introduce/resize return."""
    return {"uuid": uuid, "location": location, **extra}


def attach_info(
    params: str,
    *,
    xenstore_data: "dict[str, str] | None" = None,
    params_nbd: "str | None" = None,
    o_direct: "bool | None" = None,
) -> dict:
    """The struct vdi_attach returns: `params` is what blkback opens."""
    result: dict = {"params": params, "xenstore_data": dict(xenstore_data or {})}
    if params_nbd is not None:
        result["params_nbd"] = params_nbd
    if o_direct is not None:
        result["o_direct"] = o_direct
    return result
