"""Tallygate: an OpenAI-compatible gateway whose wallet always explains itself."""

__version__ = "0.1.0"
