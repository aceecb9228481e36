"""User-Agent headers as people read them."""

from __future__ import annotations

BROWSERS = (("Edg", "Edge"), ("OPR", "Opera"), ("Firefox", "Firefox"), ("Chrome", "Chrome"))
SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def short_agent(agent: str) -> str:
    """A User-Agent header as a person reads it ("Chrome on Linux"); the raw text when unknown."""
    browser = next((name for token, name in BROWSERS if f"{token}/" in agent), None)
    if browser is None and "Safari/" in agent and "Version/" in agent:
        browser = "Safari"
    system = next((name for token, name in SYSTEMS if token in agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return str(browser or system)
    return agent[:60] or "Unknown device"
