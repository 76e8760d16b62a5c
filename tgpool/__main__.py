"""``python -m tgpool``: the same as the ``tgpool`` command."""

import sys

from .cli import main

sys.exit(main())
