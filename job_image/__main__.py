"""`python -m job_image` (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
