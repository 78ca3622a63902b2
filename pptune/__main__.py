"""``python -m pptune`` is the ``pptune`` command."""

from __future__ import annotations

import sys

from pptune.cli import main

sys.exit(main())
