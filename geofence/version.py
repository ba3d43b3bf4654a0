"""The package version, at the ground so every layer (the CLI, the updater's User-Agent) can name it."""

__version__ = "0.1.0"
