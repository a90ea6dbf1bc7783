"""The driver executables, shipped inside the package (links to ../../drivers/ in a checkout).

A wheel carries them here, executable, so ``smctl`` installed by pip finds
drivers without a host's /opt/xensource/sm (see runner.default_driver_dir).
"""

import os

DIR = os.path.dirname(os.path.abspath(__file__))
