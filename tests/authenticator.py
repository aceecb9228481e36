"""A software passkey authenticator for the tests: discoverable EC P-256 credentials, attestation
"none", and assertions with a signature counter the test chooses."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40  # authenticator data flags: user present, verified, attested data


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    counter: int = 0


class Authenticator:
    """Holds passkeys as a platform authenticator does; ``create`` and ``get`` answer options
    as ``navigator.credentials.create/get`` would, in the JSON form the browser sends."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.credentials: list[Credential] = []

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps({**data, "crossOrigin": False}).encode()

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
        cose_key: Any = None,
        transports: Any = ("internal",),
    ) -> dict[str, Any]:
        """A registration response; ``cose_key`` in place of the credential's real public key."""
        rp = rp_id or options["rp"]["id"]
        credential = Credential(
            secrets.token_bytes(16), ec.generate_private_key(ec.SECP256R1()), rp,
            unb64(options["user"]["id"]),
        )  # fmt: skip
        self.credentials.append(credential)
        numbers = credential.key.public_key().public_numbers()
        cose = {
            1: 2,
            3: -7,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
        attested = bytes(16) + struct.pack(">H", len(credential.id)) + credential.id
        flags = UP | AT | (UV if verified else 0)
        key = cose if cose_key is None else cose_key
        auth_data = self._auth_data(rp, flags, 0) + attested + cbor2.dumps(key)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": b64(credential.id),
            "rawId": b64(credential.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": list(transports),
            },
        }

    @staticmethod
    def _auth_data(rp_id: str, flags: int, counter: int) -> bytes:
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", counter)

    def get(
        self,
        options: dict[str, Any],
        *,
        credential: Credential | None = None,
        counter: int | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """An assertion by ``credential`` (else the newest for the rp id); its counter moves on
        by one unless ``counter`` is given."""
        rp = rp_id or options["rpId"]
        chosen = credential or [c for c in self.credentials if c.rp_id == options["rpId"]][-1]
        chosen.counter = chosen.counter + 1 if counter is None else counter
        auth_data = self._auth_data(rp, UP | (UV if verified else 0), chosen.counter)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = chosen.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64(chosen.id),
            "rawId": b64(chosen.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": b64(user_handle or chosen.user_handle),
            },
        }
