"""``python -m app.cli``: the ``outpost`` command."""
import sys

from app.cli.main import main

sys.exit(main())
