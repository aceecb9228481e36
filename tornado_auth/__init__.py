"""tornado-auth: cookie sessions and authentication for Tornado."""

__version__ = "0.2.0"
