"""``python -m shared.cli``: the same as the ``clickhook`` command."""

from __future__ import annotations

import sys

from shared.cli.main import main

sys.exit(main())
