"""Which config files carry which server, so a new token can be written into all of them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError

from context_harness.primitives.mcp import MCPAuthType, Mode, SecretMode
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)


class Binding(BaseModel):
    path: str  # absolute, resolved path of an agent's config file
    client: str = "opencode"  # whose format the file is in: a key of config.format.CLIENTS
    secret_mode: SecretMode = SecretMode.INLINE
    mode: Mode = "header"  # how the entry gets the credential (`primitives.mcp.Mode`); a bridge's goes to `url`
    # The server's URL as `chctl add` wrote it (a bridged entry holds only a command). A header is written
    # only into an entry that still points there; None: a binding from before URLs were recorded in header
    # mode, given one at its first publish (`Publisher._migrate`, with `services.recorded_urls.plan`).
    url: str | None = None
    # The static headers `chctl add` wrote with it (`--header`, a registry's declared ones; never a secret):
    # a header-mode entry holds them itself, a bridge (and `chctl check`) sends them. None: none.
    headers: dict[str, str] | None = None
    # The URL the entry pointed at instead when its URL last changed from `url` and the header was withheld ("" for
    # none): the notify command runs once per change, also across daemon restarts. None: it points at `url`.
    withheld_for: str | None = None
    # How the server at `url` authenticates, as `chctl add` found it: the registry, the key it was given, or its
    # answer to a call without credentials (a 401 naming OAuth protected-resource metadata: `oauth`, a login is
    # due until one is stored). None: recorded before this was.
    auth: MCPAuthType | None = None
    # A local (stdio) server: the command `chctl add` wrote, and a SHA-256 of the environment it wrote with it
    # (the values may be secrets; the config keeps them). `chctl check` starts a local server only while its
    # entry still holds exactly these (`services.local_commands`). None: not local, or bound by an older version.
    command: list[str] | None = None
    environment_sha256: str | None = None


_Bindings = TypeAdapter(dict[str, list[Binding]])


class BindingStore:
    def __init__(self, file: Path) -> None:
        self.file = file
        # Config work runs in threads (a hung mount must not block the daemon): one read-modify-write at a time.
        self._changing = threading.Lock()

    def load(self) -> dict[str, list[Binding]]:
        try:
            return _Bindings.validate_json(self.file.read_bytes())
        except FileNotFoundError:
            return {}
        except (ValidationError, ValueError):
            log.error("bindings_unreadable", path=str(self.file))
            return {}

    def _save(self, bindings: dict[str, list[Binding]]) -> None:
        ensure_private_dir(self.file.parent)
        data = {name: [b.model_dump(mode="json") for b in items] for name, items in sorted(bindings.items()) if items}
        atomic_write_bytes(self.file, json.dumps(data, indent=2).encode(), mode=PRIVATE_FILE_MODE)

    def for_server(self, name: str) -> list[Binding]:
        return self.load().get(name, [])

    def bind(self, name: str, binding: Binding) -> None:
        with self._changing:
            bindings = self.load()
            items = [b for b in bindings.get(name, []) if b.path != binding.path]
            items.append(binding)
            bindings[name] = items
            self._save(bindings)

    def record_urls(self, name: str, urls: dict[str, str]) -> None:
        """Give `name`'s bindings without a URL theirs (`urls`: config path -> URL); the others stay as they are."""
        with self._changing:
            bindings = self.load()
            bindings[name] = [
                b.model_copy(update={"url": urls[b.path]}) if not b.url and b.path in urls else b
                for b in bindings.get(name, [])
            ]
            self._save(bindings)

    def note_url_changed(self, name: str, path: str, found: str | None) -> None:
        """Remember (or, with None, forget) where `path`'s entry pointed when its URL changed (`withheld_for`)."""
        with self._changing:
            bindings = self.load()
            items = bindings.get(name, [])
            bindings[name] = [b.model_copy(update={"withheld_for": found}) if b.path == path else b for b in items]
            self._save(bindings)

    def unbind(self, name: str, path: Path) -> None:
        with self._changing:
            bindings = self.load()
            bindings[name] = [b for b in bindings.get(name, []) if b.path != str(path)]
            self._save(bindings)
