"""The OS keychain as a `SecretStore`, through the `keyring` library: the Secret Service over D-Bus on Linux
(GNOME Keyring, KWallet), the macOS Keychain, the Windows Credential Locker.

Only those count as a keychain. `keyring` picks whatever backend it finds, and with `keyrings.alt` installed
and no D-Bus that is a plaintext file; its `null` and `fail` backends store nothing. So the backend is chosen
here from a list of real keychains, never from `keyring`'s own choice (nor `PYTHON_KEYRING_BACKEND`, nor a
`keyringrc.cfg`), and a keychain is only used after it answered a read (`open_keychain`). Every call blocks —
on a locked collection the Secret Service waits for a person at an unlock prompt — so the daemon makes each one
in a thread with a deadline (services/secret_vault.py).
"""

from __future__ import annotations

import sys
from typing import Any

from context_harness.stores.secret_store import Secrets, SecretsUnavailable, StoreKind

# The item names: `secret-tool lookup service context-harness:<CH_HOME> username <key>` reads one.
SERVICE_PREFIX = "context-harness"
PROBE_KEY = ".probe"  # never written: a read of it says whether the keychain answers (and is unlocked)

# The real keychains, best first on each platform. Anything else keyring may find (keyrings.alt's files,
# the null or fail backends, a chainer that could fall back to them) is not a keychain.
KEYCHAIN_BACKENDS: dict[str, tuple[str, ...]] = {
    "darwin": ("keyring.backends.macOS.Keyring",),
    "win32": ("keyring.backends.Windows.WinVaultKeyring",),
    "linux": (
        "keyring.backends.SecretService.Keyring",
        "keyring.backends.kwallet.DBusKeyring",
        "keyring.backends.libsecret.Keyring",
    ),
}


def service_name(home: str) -> str:
    """One keychain service per CH_HOME, so two homes of one user never share (and overwrite) an item."""
    return f"{SERVICE_PREFIX}:{home}"


class KeyringSecretStore:
    """One keychain item per record: service `context-harness:<CH_HOME>`, user name the record's key (a server's
    name for its credential, `<name>/client` for its client registration), the password a JSON object of the
    secret values and their stamp (`Secrets.to_json`)."""

    kind: StoreKind = "keyring"

    def __init__(self, backend: Any, service: str) -> None:
        self.backend = backend
        self.service = service

    @property
    def label(self) -> str:
        """The backend in words, e.g. `SecretService Keyring`."""
        return _backend_label(self.backend)

    def read(self, key: str) -> Secrets | None:
        try:
            raw = self.backend.get_password(self.service, key)
        except Exception as exc:  # D-Bus, a dismissed prompt, a locked item: all "cannot answer now"
            raise SecretsUnavailable(_reason(exc)) from None
        if raw is None:
            return None
        try:
            return Secrets.from_json(raw)
        except ValueError:
            raise SecretsUnavailable(f"the keychain item for {key} is not ours (it does not parse)") from None

    def write(self, key: str, secrets: Secrets) -> None:
        try:
            self.backend.set_password(self.service, key, secrets.to_json())
        except Exception as exc:
            raise SecretsUnavailable(_reason(exc)) from None

    def read_all(self) -> dict[str, Secrets] | None:
        """Every item of this service, by key, in one D-Bus connection and one Secret Service session: what the
        daemon reads at start (a read each costs a connection, a key exchange and a dozen round trips). None
        for a keychain other than the Secret Service: read each key then."""
        try:
            from keyring.backends.SecretService import Keyring as SecretServiceKeyring
        except ImportError:  # pragma: no cover - keyring always has it
            return None
        if not isinstance(self.backend, SecretServiceKeyring):
            return None
        try:
            return _read_all_secret_service(self.backend, self.service)
        except Exception as exc:
            raise SecretsUnavailable(_reason(exc)) from None

    def delete(self, key: str) -> None:
        import keyring.errors

        try:
            self.backend.delete_password(self.service, key)
        except keyring.errors.PasswordDeleteError:
            return  # nothing there
        except Exception as exc:
            raise SecretsUnavailable(_reason(exc)) from None


def _read_all_secret_service(backend: Any, service: str) -> dict[str, Secrets]:
    """The Secret Service's items of `service` (keyring's attributes), through secretstorage directly."""
    from contextlib import closing

    from secretstorage.util import open_session

    found: dict[str, Secrets] = {}
    collection = backend.get_preferred_collection()  # unlocked, or KeyringLocked
    with closing(collection.connection) as connection:
        session = open_session(connection)
        scheme = backend.schemes[backend.scheme]
        for item in collection.search_items(backend._query(service)):
            # Three round trips an item (its label, attributes, secret), not six: no unlock of each (two trips)
            # since the collection is unlocked and so are its items (one that is not fails `get_secret`, and each
            # key is then read on its own, `read`, unlocked there), and no second Item object (its label again).
            item.session = session  # one session for all, not one each
            key = item.get_attributes().get(scheme["username"])
            if key is None:
                continue
            try:
                found[key] = Secrets.from_json(item.get_secret())
            except ValueError:
                continue  # not ours: `read` of that key says so
    return found


def open_keychain(home: str) -> KeyringSecretStore:
    """The platform's keychain, once it answered a read; SecretsUnavailable naming what failed otherwise.
    Blocks (D-Bus, an unlock prompt): call it in a thread with a deadline."""
    try:
        import keyring.core
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise SecretsUnavailable("the keyring library is not installed") from None
    names = KEYCHAIN_BACKENDS.get(sys.platform, KEYCHAIN_BACKENDS["linux"])
    reasons = []
    for name in names:
        try:
            backend = keyring.core.load_keyring(name)  # checks the backend is viable (D-Bus up, service there)
        except Exception as exc:
            reasons.append(_reason(exc))
            continue
        store = KeyringSecretStore(backend, service_name(home))
        store.read(PROBE_KEY)  # answers, and is unlocked (a locked collection prompts and does not return)
        return store
    raise SecretsUnavailable(reasons[0] if reasons else "no keychain backend for this platform")


def _backend_label(backend: Any) -> str:
    module = type(backend).__module__.rsplit(".", 1)[-1]
    return f"{module} {type(backend).__name__}"


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: the exception's type and first line (D-Bus errors name the service, never
    a value we sent)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, KeyError) or "DBUS_SESSION_BUS_ADDRESS" in text:  # jeepney, secretstorage: no bus set
        return "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):  # the bus's socket is gone
        return f"the D-Bus session bus does not answer ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
