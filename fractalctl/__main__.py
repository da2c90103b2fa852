"""`python -m fractalctl`."""

import sys

from fractalctl.cli import main

sys.exit(main())
