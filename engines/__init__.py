"""Outpost's Qt-free backends, all behind one streaming contract (``engines.base.Engine``)."""
