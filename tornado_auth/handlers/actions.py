"""What both the JSON API and the pages do to sessions and users, through the account use cases."""

from __future__ import annotations

from ..accounts import LastAdmin
from ..sessions import public_id
from ..users import User
from .base import BaseHandler
from .validation import ApiError


async def revoke_own_session(handler: BaseHandler, session_id: str) -> bool:
    """End one of the signed-in user's sessions by its public id; False if it is not theirs."""
    user, sessions = handler.current_user, handler.services.sessions
    for record in await sessions.list_user(user.id):
        if public_id(record.key) != session_id:
            continue
        if record.key == handler.session.key:
            await handler.sign_out()
        else:
            accounts = handler.services.accounts
            await accounts.end_session(user.id, user.email, record.key, handler.origin())
        return True
    return False


async def revoke_other_sessions(handler: BaseHandler) -> int:
    user, accounts = handler.current_user, handler.services.accounts
    return await accounts.end_sessions(
        user.id, user.email, handler.origin(), keep=handler.session.key
    )


async def change_user(
    handler: BaseHandler, user: User, role: str | None, disabled: bool | None
) -> User:
    """An admin changes a role or the disabled flag; the user's sessions end at once."""
    try:
        return await handler.services.accounts.change_user(
            user, role, disabled, handler.origin(as_admin=True)
        )
    except LastAdmin:
        raise ApiError(409, "The last admin cannot be demoted or disabled") from None


async def revoke_user_sessions(handler: BaseHandler, user: User) -> int:
    accounts = handler.services.accounts
    return await accounts.end_sessions(user.id, user.email, handler.origin(as_admin=True))
