"""kimicode: a terminal coding agent for the Kimi K2 model family."""

__version__ = "0.1.0"
