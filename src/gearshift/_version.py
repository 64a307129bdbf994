"""gearshift's version, in a module of its own: the server reads it without importing
the client library."""

__version__ = "0.1.0"
