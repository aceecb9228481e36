"""tornado-auth: cookie sessions and authentication for Tornado."""

__version__ = "0.1.0"
