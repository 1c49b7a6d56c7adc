"""Counting and pricing: tokens (tiktoken's shipped vocabularies), price and context-window
tables, the cloud engines' meters. Above ``app.config``."""
