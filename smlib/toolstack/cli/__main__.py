"""python -m smlib.toolstack.cli: the same as smctl."""

import sys

from smlib.toolstack.cli import main

sys.exit(main())
