"""The chat layer: the turn pipeline (one entry point for every front end), the chat service
that saves turns, the Auto router, best-of-n, connectivity and the outbox sender. Above
``engines`` and ``app.storage``."""
