"""Admin API: list users, change a role or disable a user, end a user's sessions."""

from __future__ import annotations

from ..audit import BadCursor
from ..users import ROLES
from . import actions
from .base import ApiHandler
from .decorators import admin_required
from .validation import ApiError, bool_field, label, text_field

MAX_PER_PAGE = 200


class PagedHandler(ApiHandler):
    """Admin listings, paged with ``?page=1&perPage=50``."""

    def paging(self) -> tuple[int, int, int]:
        """The page, the page size, and the offset of its first item; a 400 if out of range."""
        page = self._int_argument("page", 1, 1, 10**6)
        per_page = self._int_argument("perPage", 50, 1, MAX_PER_PAGE)
        return page, per_page, (page - 1) * per_page

    def _int_argument(self, name: str, default: int, low: int, high: int) -> int:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise ApiError(400, f"{label(name)} must be an integer from {low} to {high}")
        return int(text)


class AdminUsersHandler(PagedHandler):
    @admin_required
    async def get(self) -> None:
        page, per_page, offset = self.paging()
        users, total = await self.services.users.page(offset, per_page)
        mfa, passkeys = self.services.mfa, self.services.passkeys
        counts = await passkeys.counts([user.id for user in users])
        shown = [
            {
                **user.public(),
                "mfa": (await mfa.status(user.id)).public(),
                "passkeys": counts.get(user.id, 0),
            }
            for user in users
        ]
        self.send_json({"users": shown, "total": total, "page": page, "perPage": per_page})


class AdminUserHandler(ApiHandler):
    @admin_required
    async def patch(self, user_id: str) -> None:
        body = self.json_body()
        unknown = set(body) - {"role", "disabled"}
        if unknown:
            raise ApiError(400, f"Unknown fields: {', '.join(sorted(unknown))}")
        role = text_field(body, "role", 16, required=False)
        disabled = bool_field(body, "disabled")
        if role is None and disabled is None:
            raise ApiError(400, "Role or disabled is required")
        if role is not None and role not in ROLES:
            raise ApiError(400, f"Role must be one of {', '.join(ROLES)}")
        user = await self.services.users.get(user_id)
        if user is None:
            raise ApiError(404, "User not found")
        self.send_json((await actions.change_user(self, user, role, disabled)).public())


class AdminUserSessionsHandler(ApiHandler):
    @admin_required
    async def delete(self, user_id: str) -> None:
        user = await self.services.users.get(user_id)
        if user is None:
            raise ApiError(404, "User not found")
        self.send_json({"revoked": await actions.revoke_user_sessions(self, user)})


class AdminAuditHandler(PagedHandler):
    """Newest first: by page number (``?page=``, with the total; a deep page costs what skipping
    to it costs), or by cursor (``?before=`` a page's ``older`` cursor for the next page, ``""``
    for the newest; ``?after=`` its ``newer`` cursor for the previous one, ``""`` for the
    oldest): each page then reads only itself, however long the trail."""

    @admin_required
    async def get(self) -> None:
        before = self.get_query_argument("before", None)
        after = self.get_query_argument("after", None)
        if before is None and after is None:
            page, per_page, offset = self.paging()
            entries, total = await self.services.audit.page(offset, per_page)
            shown = [entry.public() for entry in entries]
            self.send_json({"entries": shown, "total": total, "page": page, "perPage": per_page})
            return
        if self.get_query_argument("page", None) is not None or None not in (before, after):
            raise ApiError(400, "Use one of page, before and after")
        per_page = self._int_argument("perPage", 50, 1, MAX_PER_PAGE)
        try:
            found = await self.services.audit.around(per_page, before, after)
        except BadCursor:
            name = "before" if before is not None else "after"
            raise ApiError(400, f"{label(name)} is not a cursor of this list") from None
        self.send_json(
            {
                "entries": [entry.public() for entry in found.entries],
                "perPage": per_page,
                "newer": found.newer,
                "older": found.older,
            }
        )
