"""The bundle's entry point: the same ``outpost`` command as ``app.cli.main:main``.

``OUTPOST_BUNDLE_CHECK=1 outpost`` runs the bundle's self-check instead (bundle_check.py).
"""
import os
import sys

if __name__ == "__main__":
    if os.environ.get("OUTPOST_BUNDLE_CHECK") == "1":
        from bundle_check import run

        sys.exit(run())
    from app.cli import main

    sys.exit(main())
