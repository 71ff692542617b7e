"""collab-ls: real-time collaborative editing through an ordinary language server."""

__version__ = "0.1.0"
