"""Data Outpost ships: price and context-window tables, tokenizer vocabularies, the icon.

Installed as the package ``outpost_resources`` (``pyproject.toml`` maps it onto this folder), so
the code finds these files with ``importlib.resources`` in a checkout, an installed wheel and the
PyInstaller bundle alike: see ``app.paths.resource``. Nothing here is Python but this file.
"""
