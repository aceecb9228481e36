"""Applications built only on tornado-auth's public API."""
