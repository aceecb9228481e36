"""``python -m examples.notes [--config FILE] [--port P]``."""

from .app import main

main()
