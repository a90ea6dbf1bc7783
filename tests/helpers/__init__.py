"""Test helpers shared across areas (tests/ is on pytest's pythonpath):
``from helpers.xapi_harness import ...``.

xapi_harness     xapi-shaped calls; a driver run as a program or in process
sr_harness       SRHarness, what the FileSR and LVMSR harnesses share
filesr_helpers   FileSRHarness
lvmsr_helpers    LVMSRHarness
revert_scenarios vdi_revert steps both drivers must pass
fakelvm          a fake lvm2 that enforces lvm_rules
lvm_rules        lvm2's rules, shared by the fake and the real-lvm2 tests
loop_pvs         loop-device PVs for the real-lvm2 tests
smctl_run        ok / new_uuid / file_sr: checks on one smctl run; sparse_file
nbd_clients      qemu-io, nbdinfo, nbdcopy over a served disk (data path tests)
tapctl_standin   a recording stand-in for blktap's tap-ctl (no blktap here)
vhd_kill         a process killed mid-write, simulated in process
"""
