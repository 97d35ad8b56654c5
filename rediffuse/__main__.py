"""``python -m rediffuse <command>``: the same as the ``rediffuse`` command."""
import sys

from .cli import main

sys.exit(main())
