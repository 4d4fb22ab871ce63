"""The SDK version, in a module of its own so the worker can report it without importing the package root."""

__version__ = "0.1.0"
