"""``python -m rediffuse.cli`` (what ``torchrun -m rediffuse.cli train`` runs)."""
import sys

from . import main

sys.exit(main())
