"""What both the JSON API and the pages do to sessions and users, audited in one place."""

from __future__ import annotations

from ..sessions import public_id
from ..users import User
from .base import BaseHandler


async def revoke_own_session(handler: BaseHandler, session_id: str) -> bool:
    """End one of the signed-in user's sessions by its public id; False if it is not theirs."""
    user, sessions = handler.current_user, handler.services.sessions
    for record in await sessions.list_user(user.id):
        if public_id(record.key) != session_id:
            continue
        if record.key == handler.session.key:
            await handler.sign_out()
        else:
            await sessions.revoke(record.key)
            await handler.audit("session_revoked", user.id, user.email, record.key)
        return True
    return False


async def revoke_other_sessions(handler: BaseHandler) -> int:
    user = handler.current_user
    count = await handler.services.sessions.revoke_user(user.id, keep=handler.session.key)
    await handler.audit("sessions_revoked", user.id, user.email, handler.session.key, count=count)
    return count


async def change_user(
    handler: BaseHandler, user: User, role: str | None, disabled: bool | None
) -> User:
    """An admin changes a role or the disabled flag; the user's sessions end at once."""
    accounts, admin = handler.services.accounts, handler.current_user.id
    if role is not None and role != user.role:
        user = await accounts.set_role(user.id, role) or user
        await handler.audit("role_changed", user.id, user.email, role=role, by=admin)
    if disabled is not None and disabled != user.disabled:
        user = await accounts.set_disabled(user.id, disabled) or user
        event = "user_disabled" if disabled else "user_enabled"
        await handler.audit(event, user.id, user.email, by=admin)
    return user


async def revoke_user_sessions(handler: BaseHandler, user: User) -> int:
    count = await handler.services.sessions.revoke_user(user.id)
    await handler.audit(
        "sessions_revoked", user.id, user.email, count=count, by=handler.current_user.id
    )
    return count
