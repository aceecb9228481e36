"""tornado-auth: cookie sessions and authentication for Tornado.

The public API, kept stable; see the README's "Use it in your own app"::

    settings = load_settings("settings.yaml")      # or a dict, and TORNADO_AUTH_* variables
    services = await start_services(settings)       # inside the running loop
    app = make_app(services, [(r"/notes", NotesHandler)], prefix="/auth")
"""

from .accounts import Accounts, LastAdmin, Origin, SecondFactorRequired
from .app import PARTS, auth_routes, auth_settings, make_app
from .errors import StoreUnavailable
from .handlers.base import ApiHandler, BaseHandler, SessionUser
from .handlers.decorators import (
    admin_required,
    authenticated,
    mfa_required,
    requires,
    role_required,
)
from .handlers.validation import ApiError, bool_field, json_object, text_field
from .handlers.ws import SessionWebSocket
from .hooks import Hook, Hooks
from .live import SESSION_ENDED
from .services import Services, start_services
from .sessions import Session
from .settings import Settings, SettingsError, load_settings
from .throttle import Throttled
from .users import User

__version__ = "0.3.0"

__all__ = [
    "PARTS",
    "SESSION_ENDED",
    "Accounts",
    "ApiError",
    "ApiHandler",
    "BaseHandler",
    "Hook",
    "Hooks",
    "LastAdmin",
    "Origin",
    "SecondFactorRequired",
    "Services",
    "Session",
    "SessionUser",
    "SessionWebSocket",
    "Settings",
    "SettingsError",
    "StoreUnavailable",
    "Throttled",
    "User",
    "admin_required",
    "auth_routes",
    "auth_settings",
    "authenticated",
    "bool_field",
    "json_object",
    "load_settings",
    "make_app",
    "mfa_required",
    "requires",
    "role_required",
    "start_services",
    "text_field",
]
