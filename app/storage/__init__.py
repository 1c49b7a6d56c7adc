"""The SQLite database and what lives in it: conversations and messages, the usage ledger,
profiles, quotas, the outbox. Above ``app.accounting``; independent of ``engines``."""
