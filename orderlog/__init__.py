"""orderlog: an event-sourced order service whose event log is the single source of truth.

This package is the core. It knows nothing of HTTP and imports only the standard
library, peewee and orjson.
"""

__version__ = "0.1.0"
