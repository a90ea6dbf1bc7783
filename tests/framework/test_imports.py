"""The start-up contract: a driver's import path stays free of costly modules.

xapi starts a driver process per storage operation. lxml (~20 ms),
xmlrpc.client (http.client, ssl, email: ~30 ms) and XenAPI must be imported
inside the functions that need them, never when a driver module loads.
Smaller costs add up the same way on every call: dataclasses (with inspect,
~5 ms), uuid (with platform, 4-9 ms), hashlib (~2 ms) and subprocess stay out
of the driver modules and of the modules every tree command loads.
Timing is measured by bench/framework_startup.py and bench/filesr_revert.py;
this checks the cause.
"""

import os
import subprocess
import sys

import pytest
from helpers.xapi_harness import REPO_ROOT

FORBIDDEN = ("lxml", "xmlrpc.client", "XenAPI", "http.client", "ssl", "email",
             "dataclasses", "inspect", "uuid", "platform", "hashlib", "subprocess")
DRIVER_MODULES = sorted(
    f"smlib.drivers.{name[:-3]}"
    for name in os.listdir(os.path.join(REPO_ROOT, "smlib", "drivers"))
    if name.endswith(".py") and name != "__init__.py"
)
# What a tree command (FileSR, LVMSR) loads once it runs, besides the driver.
COMMAND_MODULES = ["smlib.tree.tree", "smlib.tree.gc", "smlib.tree.lock", "smlib.vhd",
                   "smlib.stores.lvm.store"]


@pytest.mark.parametrize("module", ["smlib.protocol.smapi", *DRIVER_MODULES, *COMMAND_MODULES])
def test_module_import_pulls_in_nothing_costly(module):
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()} at load time"
