"""Bearer tokens and roles: viewer < deployer < admin.

Tokens come from ``BGSERVE_AUTH_TOKENS`` (``role:token,role:token``) or a file of
``role:token`` lines, where ``role:sha256:<hex>`` holds a token's SHA-256 instead of the
token. With no token configured every caller is ``anonymous`` with the admin role
(the settings refuse a non-loopback bind in that case); a setting that is given but
holds no token is an error, never "no auth". Tokens are compared in constant time and
never logged; a principal is named by its role and a short hash.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from bgserve.errors import Forbidden, InvalidInput, Unauthorized
from bgserve.settings import Settings


class Role(IntEnum):
    """Roles in increasing power."""

    VIEWER = 1
    DEPLOYER = 2
    ADMIN = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name fit for the history, and a role."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.ADMIN)
ENV_TOKENS = "BGSERVE_AUTH_TOKENS"
ENV_TOKENS_FILE = "BGSERVE_AUTH_TOKENS_FILE"


@dataclass(frozen=True)
class _Credential:
    role: Role
    digest: bytes


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _parse_line(line: str, origin: str) -> _Credential:
    role_name, sep, secret = line.strip().partition(":")
    try:
        role = Role[role_name.strip().upper()]
    except KeyError:
        raise InvalidInput(
            f"{origin}: unknown role {role_name!r}: use viewer, deployer or admin",
            field="auth_tokens",
        ) from None
    if not sep or not secret:
        raise InvalidInput(f"{origin}: expected role:token", field="auth_tokens")
    if secret.startswith("sha256:"):
        hexdigest = secret.removeprefix("sha256:")
        try:
            return _Credential(role, bytes.fromhex(hexdigest))
        except ValueError:
            raise InvalidInput(f"{origin}: sha256 digest is not hex", field="auth_tokens") from None
    return _Credential(role, _sha256(secret))


def _file_lines(path: Path) -> list[tuple[str, str]]:
    """The token lines of the tokens file, each with its origin. Raises InvalidInput."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(
            f"{ENV_TOKENS_FILE}: cannot read {path}: {reason}", field="auth_tokens_file"
        ) from exc
    lines = [
        (line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InvalidInput(
            f"{ENV_TOKENS_FILE}: {path} holds no token (only blank lines or comments): add "
            "role:token lines, or unset it",
            field="auth_tokens_file",
        )
    return lines


class Authenticator:
    """Checks bearer tokens against the configured credentials."""

    def __init__(self, credentials: list[_Credential]) -> None:
        self._credentials = credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """Read tokens from the settings and the tokens file.

        Fails closed: a setting that is given but yields no token, or a tokens file that
        cannot be read, raises InvalidInput naming the setting, so bgserve never starts
        with an open API by accident.
        """
        lines = [(t, ENV_TOKENS) for t in settings.auth_tokens.split(",") if t.strip()]
        if settings.auth_tokens and not lines:
            raise InvalidInput(
                f"{ENV_TOKENS} is set but holds no token: give role:token pairs, or unset it",
                field="auth_tokens",
            )
        if settings.auth_tokens_file is not None:
            lines += _file_lines(Path(settings.auth_tokens_file))
        return cls([_parse_line(line, origin) for line, origin in lines])

    @property
    def enabled(self) -> bool:
        return bool(self._credentials)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``Authorization`` header. Raises Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = _sha256(token)
        match = None
        for credential in self._credentials:
            if hmac.compare_digest(credential.digest, digest):  # no early exit: constant time
                match = credential
        if match is None:
            raise Unauthorized("unknown bearer token")
        return Principal(f"{match.role.name.lower()}:{digest.hex()[:8]}", match.role)


def require(principal: Principal, role: Role) -> Principal:
    """Return ``principal`` if its role is at least ``role``. Raises Forbidden."""
    if principal.role < role:
        raise Forbidden(
            f"{principal.name} has role {principal.role.name.lower()}; this needs "
            f"{role.name.lower()} or higher"
        )
    return principal
