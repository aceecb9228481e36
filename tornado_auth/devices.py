"""Readable devices from User-Agent strings ("Firefox 133 on Ubuntu", "Safari on iPhone")."""

from __future__ import annotations

import functools

from ua_parser import parse

UNKNOWN = "Unknown device"
# ua-parser's family names, as people say them
BROWSERS = {"Mobile Safari": "Safari", "Chrome Mobile": "Chrome", "Firefox Mobile": "Firefox"}
MOBILE_BROWSERS = ("Safari",)  # shown without a version: iOS ties it to the system


@functools.lru_cache(maxsize=1024)
def device_name(user_agent: str) -> str:
    """A short description of the browser and system a User-Agent names, or "Unknown device"."""
    if not user_agent:
        return UNKNOWN
    result = parse(user_agent[:512])
    browser = system = ""
    if result.user_agent is not None and result.user_agent.family != "Other":
        family = BROWSERS.get(result.user_agent.family, result.user_agent.family)
        mobile = result.device is not None and result.device.family in ("iPhone", "iPad")
        major = result.user_agent.major
        browser = (
            family if (mobile and family in MOBILE_BROWSERS) or not major else f"{family} {major}"
        )
    if result.device is not None and result.device.family in ("iPhone", "iPad"):
        system = result.device.family
    elif result.os is not None and result.os.family != "Other":
        system = result.os.family
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or UNKNOWN
