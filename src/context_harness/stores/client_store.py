"""OAuth client registrations on disk: `clients/<server>.json`, 0600 in a 0700 directory.

A registration is bound to the issuer that made it: `get` never hands one to another issuer.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import structlog
from pydantic import ValidationError

from context_harness.primitives.names import valid_server_name
from context_harness.primitives.oauth import ClientRegistration
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)


class ClientStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, server: str) -> Path:
        if not valid_server_name(server):
            raise ValueError(f"unsafe server name {server!r}")
        return self.directory / f"{server}.json"

    def get(self, server: str, issuer: str) -> ClientRegistration | None:
        """The registration for `server` made at `issuer`; None if absent, unreadable or for another issuer."""
        try:
            raw = self._path(server).read_bytes()
        except FileNotFoundError:
            return None
        try:
            registration = ClientRegistration.model_validate_json(raw)
        except ValidationError:
            log.warning("client_registration_unreadable", server=server)
            return None
        if registration.issuer != issuer:
            log.info("client_registration_issuer_changed", server=server, issuer=issuer)
            return None
        if registration.secret_expired():
            log.info("client_registration_secret_expired", server=server)
            return None
        return registration

    def secret_path(self, server: str) -> Path | None:
        """The registration file of `server` when it holds a client secret (for `chctl status`: where secrets
        rest); None otherwise."""
        try:
            stored = ClientRegistration.model_validate_json(self._path(server).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None
        return self._path(server) if stored.client_secret else None

    def save(self, server: str, registration: ClientRegistration) -> None:
        path = self._path(server)
        ensure_private_dir(self.directory)
        atomic_write_bytes(path, registration.model_dump_json(indent=2).encode(), mode=PRIVATE_FILE_MODE)

    def remember_auth_method(self, server: str, client_id: str, auth_method: str) -> None:
        """The token endpoint took `client_id`'s secret another way than its registration said: record the
        way that worked, so refreshes and revocation use it too."""
        try:
            stored = ClientRegistration.model_validate_json(self._path(server).read_bytes())
        except (FileNotFoundError, ValidationError):
            return
        if stored.client_id == client_id and stored.token_endpoint_auth_method != auth_method:
            self.save(server, stored.model_copy(update={"token_endpoint_auth_method": auth_method}))
            log.info("client_auth_method_updated", server=server, auth_method=auth_method)

    def forget(self, server: str, client_id: str) -> bool:
        """Delete `server`'s registration if it is the one for `client_id`; whether one was deleted."""
        try:
            stored = ClientRegistration.model_validate_json(self._path(server).read_bytes())
        except (FileNotFoundError, ValidationError):
            return False
        if stored.client_id != client_id:
            return False
        self.delete(server)
        return True

    def delete(self, server: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(server).unlink()
