"""Where things are and what the user configured: paths, settings, providers, keys (the OS
keychain), presets, what servers taught us. Above ``app.domain``."""
