"""Which server names mean something here, and what a name that does not is answered with.

A name is known when the registry has it, or the user made it theirs: bound to a config by `chctl add`, or with
a credential stored. Every command that takes a server name refuses any other with the closest known names
(a typo must not be shared, logged into or bridged to as if it were a new server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from context_harness.primitives.names import valid_server_name
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.services.registry import close_names
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore


class ServerNames:
    def __init__(self, registry: Callable[[], Iterable[str]], bindings: BindingStore, tokens: TokenStore) -> None:
        self.registry = registry  # read at each question: a SIGHUP reload shows at once
        self.bindings = bindings
        self.tokens = tokens

    def yours(self) -> set[str]:
        """The servers the user added or logged into."""
        bound = {name for name, items in self.bindings.load().items() if items}
        return bound | set(self.tokens.names())

    def is_known(self, name: str) -> bool:
        if not valid_server_name(name):
            return False
        return name in set(self.registry()) or bool(self.bindings.for_server(name)) or self.tokens.path(name).exists()

    def unknown(self, name: str) -> Failure | None:
        """None for a known name; else NOT_FOUND with the closest names (the user's first)."""
        if self.is_known(name):
            return None
        return unknown_server(name, self.yours(), self.registry())


def unknown_server(name: str, yours: Iterable[str], registry: Iterable[str]) -> Failure:
    """`unknown server 'x'`, and a hint with the closest of `yours`, then of `registry`."""
    mine = set(yours)
    suggestions = close_names(name, mine)
    suggestions += [n for n in close_names(name, set(registry) - mine) if n not in suggestions]
    if suggestions:
        guesses = " or ".join(f"`{n}`" for n in suggestions[:3])
        hint = f"did you mean {guesses}? `chctl status` lists your servers"
    else:
        hint = "`chctl status` lists your servers, `chctl registry` the ones chctl knows"
    return Failure(f"unknown server {name!r}", ErrorCode.NOT_FOUND, hint)
