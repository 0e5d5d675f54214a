"""`python -m selfimprove.cli ...`: the same as the `selfimprove` command."""

import sys

from selfimprove.cli import main

sys.exit(main())
