"""Account rules shared by the HTTP handlers and the command line."""

from __future__ import annotations

import time

from .sessions import EndReason, SessionManager
from .users import ROLES, User, UserStore, new_user_id, normalize_email
from .users.passwords import DummyHash, hash_password, needs_rehash, verify_password


class Accounts:
    def __init__(self, users: UserStore, sessions: SessionManager, bcrypt_rounds: int) -> None:
        self.users = users
        self.sessions = sessions
        self.rounds = bcrypt_rounds
        self._dummy = DummyHash()

    async def start(self) -> None:
        """Make the dummy hash now, so that no sign-in pays for it and stands out by its time."""
        await self._dummy.get(self.rounds)

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user these credentials prove, or None; an unknown email costs one bcrypt check."""
        user = await self.users.by_email(normalize_email(email))
        if user is None:
            await verify_password(password, await self._dummy.get(self.rounds))
            return None
        if not await verify_password(password, user.password_hash) or user.disabled:
            return None
        fields: dict[str, object] = {"last_login_at": time.time()}
        if needs_rehash(user.password_hash, self.rounds):
            fields["password_hash"] = await hash_password(password, self.rounds)
        return await self.users.set(user.id, **fields) or user

    async def register(self, email: str, name: str, password: str, role: str = "user") -> User:
        """A new user; EmailTaken if the email is in use."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        user = User(
            id=new_user_id(),
            email=normalize_email(email),
            name=name.strip(),
            role=role,
            password_hash=await hash_password(password, self.rounds),
            created_at=time.time(),
        )
        await self.users.add(user)
        return user

    async def change_password(self, user: User, current: str, new: str) -> bool:
        if not await verify_password(current, user.password_hash):
            return False
        await self.users.set(user.id, password_hash=await hash_password(new, self.rounds))
        return True

    async def set_role(self, user_id: str, role: str) -> User | None:
        """Change a role; the user's sessions end so no stale right survives."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        user = await self.users.set(user_id, role=role)
        if user is not None:
            await self.sessions.revoke_user(user.id, reason=EndReason.ROLE)
        return user

    async def set_disabled(self, user_id: str, disabled: bool) -> User | None:
        """Disable or enable a user; disabling ends every session at once."""
        user = await self.users.set(user_id, disabled=disabled)
        if user is not None and disabled:
            await self.sessions.revoke_user(user.id, reason=EndReason.DISABLED)
        return user
