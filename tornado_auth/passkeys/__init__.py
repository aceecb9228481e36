"""Passkeys (WebAuthn discoverable credentials, verified with py_webauthn): registering,
listing, renaming and removing them, and proving a user with one, as the only factor (sign-in
without a password) or as a second one.

Each ceremony's challenge is 256 random bits kept as a single-use token record (purpose
``passkey-challenge``, ``security.passkey_challenge_ttl``); the response names its challenge in
clientDataJSON, and the record is taken as it is read, so a challenge works once, even for two
responses at once in two processes. The relying party is ``server.public_url``: its host is the
rp id, its origin the one expected. Challenges, credentials and keys are never logged or audited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import secrets
import time
import unicodedata
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.decode_credential_public_key import decode_credential_public_key
from webauthn.helpers.decoded_public_key_to_cryptography import (
    decoded_public_key_to_cryptography,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..accounts import SIGN_IN, Accounts, Origin, StartSession
from ..audit import AuditEvent
from ..mail import Mailer
from ..sessions import EndReason
from ..settings import Settings
from ..tasks import runs_to_the_end
from ..throttle import Throttled
from ..tokens import TokenRecord, TokenStore, hash_token
from ..users import User
from ..users.base import BIDI_CONTROLS

if TYPE_CHECKING:
    from ..users import UserStore

__all__ = [
    "CHALLENGE",
    "MAX_PER_USER",
    "Passkey",
    "PasskeyStore",
    "Passkeys",
    "TooManyPasskeys",
    "credential_problem",
    "passkey_name",
    "passkeys_for",
    "relying_party",
]

log = logging.getLogger("tornado_auth.passkeys")

CHALLENGE = "passkey-challenge"  # the token records' purpose
REGISTER, AUTHENTICATE = "register", "authenticate"
MAX_PER_USER = 20
MAX_NAME = 64
MAX_CREDENTIAL_ID = 1023  # bytes, as WebAuthn allows
MAX_FIELD = 32768  # characters of one base64url field of a response (the body limit is 64 KiB)
# What stands for the account in the sign-in throttle (with the credential id): a passkey names
# its user only once proven.
THROTTLE_ACCOUNT = "passkey"
OPTIONS_PER_IP = 30  # challenges (registration or sign-in options) from one address a minute
RENAMES = 30  # per user and throttle.mail_window: each rename is an audit entry
TRANSPORTS = frozenset(transport.value for transport in AuthenticatorTransport)


class TooManyPasskeys(Exception):
    """The user has ``MAX_PER_USER`` passkeys already."""


@dataclass(slots=True)
class Passkey:
    credential_id: str  # base64url, as the browser names it
    user_id: str
    name: str
    public_key: bytes  # COSE
    sign_count: int
    created_at: float
    last_used_at: float | None = None
    transports: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The public id (in URLs): a digest of the credential id, of a fixed length."""
        return hashlib.sha256(self.credential_id.encode()).hexdigest()[:32]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "transports": self.transports,
        }


class PasskeyStore(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def add(self, passkey: Passkey) -> bool:
        """Store a new passkey; False if its credential id is taken."""

    @abstractmethod
    async def get(self, credential_id: str) -> Passkey | None: ...

    @abstractmethod
    async def list_user(self, user_id: str) -> list[Passkey]:
        """A user's passkeys, oldest first."""

    @abstractmethod
    async def counts(self, user_ids: list[str]) -> dict[str, int]:
        """How many passkeys each of these users has (users without any are left out)."""

    @abstractmethod
    async def rename(self, credential_id: str, name: str) -> bool: ...

    @abstractmethod
    async def used(self, credential_id: str, expected: int, sign_count: int, at: float) -> bool:
        """Record a use: the new signature counter and time, only while the stored counter is
        ``expected`` (two uses with one counter value: one wins)."""

    @abstractmethod
    async def remove(self, credential_id: str) -> bool: ...


def passkeys_for(users: UserStore) -> PasskeyStore:
    """The passkey store living in the same database as ``users``."""
    from ..users.sqlite import SQLiteUserStore

    if isinstance(users, SQLiteUserStore):
        from .sqlite import SQLitePasskeyStore

        return SQLitePasskeyStore(users.db)
    from ..users.mongo import MongoUserStore

    if isinstance(users, MongoUserStore):
        from .mongo import MongoPasskeyStore

        return MongoPasskeyStore(users.mongo, f"{users.collection_name}_passkeys")
    raise ValueError(f"no passkey store for user store {type(users).__name__}")


# -- input checks ---------------------------------------------------------------------------------


def _base64url(value: object, limit: int = MAX_FIELD) -> bytes | None:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in value.rstrip("=")):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def credential_problem(credential: object, ceremony: str = AUTHENTICATE) -> str | None:
    """Why a browser's JSON response (``PublicKeyCredential.toJSON()``) cannot be one, or None."""
    if not isinstance(credential, dict):
        return "Credential must be an object"
    response = credential.get("response")
    raw_id = _base64url(credential.get("rawId"), MAX_CREDENTIAL_ID * 2)
    if (
        raw_id is None
        or len(raw_id) > MAX_CREDENTIAL_ID
        or credential.get("id") != credential.get("rawId")
    ):
        return "Credential id is malformed"
    if credential.get("type") != "public-key" or not isinstance(response, dict):
        return "Credential is malformed"
    fields = ("attestationObject",) if ceremony == REGISTER else ("authenticatorData", "signature")
    for name in ("clientDataJSON", *fields):
        if _base64url(response.get(name)) is None:
            return f"Credential {name} is malformed"
    if _challenge(credential) is None:
        return "Credential clientDataJSON is malformed"
    handle = response.get("userHandle")
    if handle is not None and _base64url(handle, 256) is None:
        return "Credential userHandle is malformed"
    return None


def _challenge(credential: dict[str, Any]) -> str | None:
    """The challenge a response names in its clientDataJSON, or None."""
    response = credential.get("response")
    data = _base64url(response.get("clientDataJSON")) if isinstance(response, dict) else None
    try:
        client = json.loads(data or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    challenge = client.get("challenge") if isinstance(client, dict) else None
    return challenge if _base64url(challenge, 128) is not None else None


def passkey_name(value: object) -> str:
    """A passkey's name, spaces collapsed; ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError("Name must be a string")
    name = " ".join(value.split())
    if len(name) > MAX_NAME:
        raise ValueError(f"Name must be at most {MAX_NAME} characters")
    if any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in name):
        raise ValueError("Name must not contain control characters")
    return name


def relying_party(public_url: str) -> tuple[str, str]:
    """The rp id (the host) and the origin browsers report for ``server.public_url``: lower
    case, without a default port."""
    parts = urllib.parse.urlsplit(public_url)
    host, port = parts.hostname or "", parts.port
    shown = (
        f":{port}" if port and (parts.scheme, port) not in (("http", 80), ("https", 443)) else ""
    )
    return host, f"{parts.scheme}://{host}{shown}"


def _options(options: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


# -- the use cases --------------------------------------------------------------------------------


class Passkeys:
    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        store: PasskeyStore,
        tokens: TokenStore,
        mailer: Mailer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.users = accounts.users
        self.store = store
        self.tokens = tokens
        self.mailer = mailer
        self.clock = clock
        self.public_url = settings["server.public_url"]
        self.rp_id, self.origin = relying_party(self.public_url)
        self.challenge_ttl = settings["security.passkey_challenge_ttl"]
        self.rename_window = settings["throttle.mail_window"]

    async def count(self, user_id: str) -> int:
        return (await self.store.counts([user_id])).get(user_id, 0)

    async def counts(self, user_ids: list[str]) -> dict[str, int]:
        return await self.store.counts(user_ids)

    async def remove_all(self, user_id: str) -> int:
        """Remove every passkey of the user (an admin's reset of the second factors, which ends
        the sessions and mails the notice); how many there were."""
        passkeys = await self.store.list_user(user_id)
        for passkey in passkeys:
            await self.store.remove(passkey.credential_id)
        return len(passkeys)

    async def of_user(self, user_id: str) -> list[Passkey]:
        return await self.store.list_user(user_id)

    async def find(self, user_id: str, passkey_id: str) -> Passkey | None:
        """One of the user's passkeys by its public id."""
        for passkey in await self.store.list_user(user_id):
            if passkey.id == passkey_id:
                return passkey
        return None

    # -- challenges ------------------------------------------------------------------------------

    async def _count(self, kind: str, who: str, limit: int, window: float) -> None:
        """Count one more ``kind`` of ``who``; Throttled past ``limit`` a ``window``."""
        now = self.clock()
        name = f"passkey:{kind}:{hashlib.sha256(who.encode()).hexdigest()[:32]}"
        count, ends = await self.accounts.throttle.counters.hit(name, window, now)
        if count > limit:
            raise Throttled(max(1, math.ceil(ends - now)), first=False)

    async def _count_options(self, origin: Origin | None) -> None:
        """Each challenge is a stored record: at most OPTIONS_PER_IP a minute from one address."""
        if origin is not None and origin.ip:
            await self._count("options", origin.ip, OPTIONS_PER_IP, 60.0)

    async def _new_challenge(self, ceremony: str, user_id: str = "") -> bytes:
        challenge = secrets.token_bytes(32)
        now = self.clock()
        key = hash_token(_encode(challenge))
        record = TokenRecord(key, CHALLENGE, user_id, now + self.challenge_ttl, {"for": ceremony})
        await self.tokens.put(record, now)
        return challenge

    async def _take_challenge(
        self, credential: dict[str, Any], ceremony: str
    ) -> TokenRecord | None:
        """The live challenge record the response names, used up; None if unknown, used,
        expired or made for another ceremony."""
        challenge = _challenge(credential)
        if challenge is None:
            return None
        record = await self.tokens.take(hash_token(challenge.rstrip("=")), CHALLENGE, self.clock())
        return record if record is not None and record.data.get("for") == ceremony else None

    # -- registration ----------------------------------------------------------------------------

    async def registration_options(
        self, user: User, origin: Origin | None = None
    ) -> dict[str, Any]:
        """Options for ``navigator.credentials.create``: a discoverable credential with user
        verification, none of the user's passkeys again; TooManyPasskeys past the limit,
        Throttled past OPTIONS_PER_IP."""
        existing = await self.store.list_user(user.id)
        if len(existing) >= MAX_PER_USER:
            raise TooManyPasskeys(user.id)
        await self._count_options(origin)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_id,
            user_id=user.id.encode(),
            user_name=user.email,
            user_display_name=user.name,
            challenge=await self._new_challenge(REGISTER, user.id),
            timeout=int(self.challenge_ttl * 1000),
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[_descriptor(passkey) for passkey in existing],
        )
        return _options(options)

    async def register(
        self, user: User, credential: dict[str, Any], name: str, origin: Origin
    ) -> Passkey | None:
        """Store the passkey a ``navigator.credentials.create`` response proves, made for a
        challenge of this user's; None if it proves nothing (or its credential is taken)."""
        if credential_problem(credential, REGISTER) is not None:
            return None
        record = await self._take_challenge(credential, REGISTER)
        if record is None or record.user_id != user.id:
            return None
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=_challenge_bytes(credential),
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
            # a key that cannot be loaded could never verify a sign-in: refuse it now
            decoded_public_key_to_cryptography(
                decode_credential_public_key(verified.credential_public_key)
            )
        except Exception as error:  # the response is the client's: any parse failure is a 400
            log.info("passkey registration refused: %s", type(error).__name__)
            return None
        if len(await self.store.list_user(user.id)) >= MAX_PER_USER:
            raise TooManyPasskeys(user.id)
        response = credential.get("response", {})
        transports = response.get("transports")
        passkey = Passkey(
            credential_id=_encode(verified.credential_id),
            user_id=user.id,
            name=name or "Passkey",
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            created_at=self.clock(),
            transports=sorted(
                {t for t in transports if isinstance(t, str) and t in TRANSPORTS}
                if isinstance(transports, list)
                else ()
            ),
        )
        if not await self.store.add(passkey):
            return None
        await self.accounts.record(
            AuditEvent.PASSKEY_ADDED, origin, user, passkey=passkey.id, name=passkey.name
        )
        self._send(user.email, "passkey_added", name=passkey.name)
        return passkey

    # -- proving a user --------------------------------------------------------------------------

    async def authentication_options(
        self, user_id: str | None = None, origin: Origin | None = None
    ) -> dict[str, Any]:
        """Options for ``navigator.credentials.get``: for any passkey (discoverable: no
        allowCredentials) or, as a second factor, for one of ``user_id``'s. Throttled past
        OPTIONS_PER_IP from the origin's address."""
        await self._count_options(origin)
        allowed = []
        if user_id is not None:
            allowed = [_descriptor(passkey) for passkey in await self.store.list_user(user_id)]
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=await self._new_challenge(AUTHENTICATE, user_id or ""),
            timeout=int(self.challenge_ttl * 1000),
            allow_credentials=allowed,
            user_verification=(
                UserVerificationRequirement.REQUIRED
                if user_id is None
                else UserVerificationRequirement.PREFERRED
            ),
        )
        return _options(options)

    async def verify_authentication(
        self, credential: dict[str, Any], user_id: str | None, origin: Origin | None = None
    ) -> str | None:
        """The id of the user a ``navigator.credentials.get`` response proves, or None (for a
        malformed response too). Without ``user_id`` (sign-in without a password) the
        authenticator must have verified the user; with it (a second factor) only that user's
        passkey, for a challenge not made for someone else, is accepted. A signature counter
        that did not move on (when not zero) is refused and audited: a cloned authenticator."""
        if credential_problem(credential) is not None:
            return None
        record = await self._take_challenge(credential, AUTHENTICATE)
        if record is None or record.user_id not in ("", user_id):
            return None
        passkey = await self.store.get(_encode(_base64url(credential["rawId"]) or b""))
        if passkey is None or (user_id is not None and passkey.user_id != user_id):
            return None
        handle = credential["response"].get("userHandle")
        if handle and _base64url(handle) != passkey.user_id.encode():
            return None
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=_challenge_bytes(credential),
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=0,  # checked below, once the signature holds
                require_user_verification=user_id is None,
            )
        except Exception as error:  # the response is the client's: any parse failure refuses
            log.info("passkey authentication refused: %s", type(error).__name__)
            return None
        count, stored = verified.new_sign_count, passkey.sign_count
        moved_on = (count == 0 and stored == 0) or count > stored
        if not moved_on or not await self.store.used(
            passkey.credential_id, stored, count, self.clock()
        ):
            user = await self.users.get(passkey.user_id)
            await self.accounts.record(
                AuditEvent.PASSKEY_COUNTER_REFUSED,
                origin or Origin(),
                user,
                user_id=passkey.user_id,
                passkey=passkey.id,
                counter=count,
                stored=stored,
            )
            return None
        return passkey.user_id

    async def sign_in(
        self, credential: dict[str, Any], origin: Origin, start_session: StartSession
    ) -> User | None:
        """Sign in with a passkey alone, through the sign-in path a password takes (throttle,
        audit, live event, hooks, the re-check once the session exists); None if the response
        proves nothing, AccountDisabled for a disabled user's passkey. Failures are counted per
        credential id and address, as a password's per email and address, and per address."""
        account = f"{THROTTLE_ACCOUNT}:{str(credential.get('rawId'))[: MAX_CREDENTIAL_ID * 2]}"
        await self.accounts.reserve(account, origin, SIGN_IN)
        user_id = await self.verify_authentication(credential, None, origin)
        user = await self.users.get(user_id) if user_id is not None else None
        if not await self.accounts.checked(
            user is not None, user, account, origin, SIGN_IN, method="passkey"
        ):
            return None
        assert user is not None
        return await self.accounts.enter(
            user, origin, start_session, methods=["passkey"], method="passkey"
        )

    # -- managing them ---------------------------------------------------------------------------

    async def rename(self, user: User, passkey: Passkey, name: str, origin: Origin) -> Passkey:
        """Give one of the user's passkeys a new name; Throttled past RENAMES a
        ``throttle.mail_window`` (each rename is an audit entry)."""
        if not name or name == passkey.name:
            return passkey
        await self._count("rename", user.id, RENAMES, self.rename_window)
        if await self.store.rename(passkey.credential_id, name):
            passkey.name = name
            await self.accounts.record(
                AuditEvent.PASSKEY_RENAMED, origin, user, passkey=passkey.id, name=name
            )
        return passkey

    @runs_to_the_end  # a passkey removed ends the other sessions, whatever the request's fate
    async def remove(self, user: User, passkey: Passkey, origin: Origin) -> int | None:
        """Remove one of the user's passkeys: every other session of the user ends and a notice
        is mailed. How many sessions ended; None if it was removed already."""
        if not await self.store.remove(passkey.credential_id):
            return None
        sessions = self.accounts.sessions
        revoked = await sessions.revoke_user(
            user.id, keep=origin.session_key, reason=EndReason.REVOKED
        )
        await self.accounts.record(
            AuditEvent.PASSKEY_REMOVED, origin, user, passkey=passkey.id, revoked=revoked
        )
        self._send(user.email, "passkey_removed", name=passkey.name)
        return revoked

    def _send(self, to: str, template: str, **values: Any) -> None:
        link = f"{self.public_url}/account"
        self.mailer.send(to, template, public_url=self.public_url, email=to, link=link, **values)


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in passkey.transports if t in TRANSPORTS]
    return PublicKeyCredentialDescriptor(
        id=_base64url(passkey.credential_id, MAX_CREDENTIAL_ID * 2) or b"",
        transports=transports or None,
    )


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _challenge_bytes(credential: dict[str, Any]) -> bytes:
    """The challenge a well-formed response names, as bytes."""
    return _base64url(_challenge(credential)) or b""
