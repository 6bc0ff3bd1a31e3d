"""Where a server's credential may go: the URL chctl recorded, never what a config says later.

A project config is shared through git, so its `url` can change under us (a pull, a collaborator's commit).
What chctl recorded is the truth: the credential keeps the URL it was issued for (`Credential.server_url`,
set at login, and with the key at `chctl add`), every binding keeps the URL `chctl add` wrote. The bridge and
`chctl auth` use the recorded URL alone, and the publisher writes a header only into an entry that still
points there.

Files from before URLs were recorded are migrated from the current state, conservatively (`plan`). A project
config arrives through git, so its author may be anyone: it never vouches for a URL. What does:
- for a credential: the registry's URL, which wins; for a server not in the registry, the one URL its
  bindings recorded (`chctl add` wrote them) and the user's own (global) configs agree on. An OAuth login
  takes only one its `resource` covers, and that `resource` (recorded at login) also lets a project config's
  URL count. Without such a URL it takes none: nothing is written, bridged or checked with it until
  `chctl add NAME --url URL` says which URL is meant;
- a header binding takes its credential's URL (an entry pointing elsewhere then shows as changed), or, for a
  server with no credential (nothing secret at stake), the URL its entry holds now if the config is the
  user's own; a project config's binding stays without one until `chctl add` records it.
The publisher saves what `plan` finds, under the server's lock, the first time it writes the server.
A config on a hung mount is left out (its binding takes the credential's URL or waits for the next try).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from context_harness.config.format import get_format
from context_harness.oauth.discovery import resource_matches
from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import describe_url
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.config_service import ConfigService
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore


@dataclass(frozen=True, slots=True)
class Migration:
    """The URLs to record for a server whose credential or bindings have none yet."""

    credential_url: str | None = None  # None: nothing to record, or the candidates disagree
    binding_urls: dict[str, str] = field(default_factory=dict)  # config path -> URL

    @property
    def empty(self) -> bool:
        return self.credential_url is None and not self.binding_urls


def needs_migration(credential: Credential | None, bindings: list[Binding]) -> bool:
    return (credential is not None and not credential.server_url) or any(not b.url for b in bindings)


def entry_url(config: ConfigService, name: str, binding: Binding) -> str | None:
    """The URL `binding`'s config holds for `name` right now (input, never a destination by itself)."""
    fmt = get_format(binding.client)
    entries = config.entries(Path(binding.path), fmt)
    entry = entries.value.get(name) if isinstance(entries, Success) else None
    return fmt.entry_url(entry) if isinstance(entry, dict) else None


def current_urls(name: str, config: ConfigService, bindings: list[Binding]) -> dict[str, str]:
    """What the configs of the bindings without a recorded URL say now (config path -> URL)."""
    return {b.path: url for b in bindings if not b.url and (url := entry_url(config, name, b))}


def users_own(binding: Binding) -> bool:
    """Whether `binding`'s config is its client's user-level file, which only the user writes (a project
    config may come from anyone through git)."""
    try:
        return get_format(binding.client).global_path().resolve() == Path(binding.path)
    except OSError:
        return False


def plan(
    credential: Credential | None, bindings: list[Binding], current: dict[str, str], registry_url: str | None
) -> Migration:
    """What to record (see the module's docstring). `current`: `current_urls`, or the part of it that could be
    read (a config on a hung mount adds no candidate; its binding gets the credential's URL, or none).
    `registry_url`: the registry's URL for the server, if it has one."""
    if not needs_migration(credential, bindings):
        return Migration()
    own = {b.path for b in bindings if users_own(b)}
    if credential is None:  # nothing secret at stake: a binding keeps what its entry holds, in the user's files
        return Migration(None, {path: url for path, url in current.items() if path in own})
    credential_url = credential.server_url or _credential_url(credential, bindings, current, own, registry_url)
    # The credential's URL, or none: a binding's entry decides nothing then.
    binding_urls = {b.path: credential_url for b in bindings if not b.url and credential_url}
    fresh = credential_url if not credential.server_url else None
    return Migration(fresh, binding_urls)


def _credential_url(
    credential: Credential, bindings: list[Binding], current: dict[str, str], own: set[str], registry_url: str | None
) -> str | None:
    """The registry's URL; else the one URL that the recorded bindings and the configs that may vouch agree on:
    the user's own, and a project config only where the login's `resource` covers its URL as well."""
    resource = credential.resource if credential.kind == "oauth" else None
    if registry_url:
        candidates = {registry_url}
    else:
        vouched = {url for path, url in current.items() if path in own or resource}
        candidates = {b.url for b in bindings if b.url} | vouched
    if resource:
        candidates = {url for url in candidates if resource_matches(resource, url)}
    return candidates.pop() if len(candidates) == 1 else None


def apply(name: str, migration: Migration, tokens: TokenStore, bindings: BindingStore) -> None:
    """Save `migration`. The caller holds the server's refresh lock: the token file is rewritten."""
    if migration.credential_url:
        credential = tokens.load(name)
        if credential is not None and not credential.server_url:
            tokens.save(credential.model_copy(update={"server_url": migration.credential_url}))
    if migration.binding_urls:
        bindings.record_urls(name, migration.binding_urls)


def recorded_url(
    name: str,
    config: ConfigService,
    tokens: TokenStore,
    bindings: BindingStore,
    registry_url: str | None,
    *,
    login: bool = False,
) -> Result[str] | None:
    """The URL `name`'s credential may go to; None when nothing is recorded (then: NOT_FOUND for the caller).
    `login`: for a new login, which records its own URL; an older credential without one is passed over."""
    credential = tokens.load(name)
    items = bindings.for_server(name)
    if credential is not None and credential.server_url:
        return Success(credential.server_url)
    if login:
        credential = None
    found = plan(credential, items, current_urls(name, config, items), registry_url)
    if credential is not None:
        if found.credential_url:
            return Success(found.credential_url)
        return unrecorded(name)
    # No credential yet, so nothing secret is at stake: the latest `chctl add` (a login records it).
    for binding in reversed(items):
        url = binding.url or found.binding_urls.get(binding.path)
        if url:
            return Success(url)
    return Success(registry_url) if registry_url else None


def unrecorded(name: str) -> Failure:
    """A credential from before URLs were recorded, for which nothing trustworthy names a URL: nothing is sent."""
    return Failure(
        f"no URL is recorded for {name}'s credential (it predates recorded URLs, and neither the registry nor "
        "a config of yours names one; a project config does not count): nothing is sent with it",
        ErrorCode.CONFIG_INVALID,
        f"say where it belongs: `chctl add {name} --url URL` (a login made for another URL then needs "
        f"`chctl auth {name}`)",
    )


def belongs_elsewhere(name: str, stored: Credential | None, url: str) -> Failure | None:
    """`chctl add NAME --url URL` for a server whose credential was recorded for another URL: refused, so the
    credential is never written beside a URL it does not belong to."""
    if stored is None or not stored.server_url or stored.server_url == url:
        return None
    return Failure(
        f"{name}'s credential belongs to {describe_url(stored.server_url)}, not {describe_url(url)}",
        ErrorCode.INVALID_PARAMS,
        f"`chctl add {name}` without --url keeps its URL; for another server, forget this one first "
        f"(`chctl auth {name} --logout`, or a new key with -k)",
    )
