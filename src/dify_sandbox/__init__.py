"""dify-sandbox-py: a drop-in replacement for the Dify code sandbox."""

__version__ = "0.1.0"
