"""``python -m m2a_core`` is the ``m2a`` command."""
import sys

from m2a_core.cli import main

sys.exit(main())
