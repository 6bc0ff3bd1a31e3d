"""What the daemon's socket peers may use at once: connections, bridges, buffered bytes, idle time.

The far end of `remote.sock` (whoever sits at the far end of an SSH forward, a compromised dev box included) is
outside input: it gets a few connections and bridges, a share of the bytes the bridges may buffer, and idle
bridges are closed. The local socket is the user's own: it has no connection cap, and the remote side's caps
leave it room (descriptors, bridges, buffered bytes), so the user's own `chctl` always answers. Every number
is here, with its reason; docs/guide.md and docs/security.md quote them.
"""

from __future__ import annotations

from dataclasses import dataclass

from context_harness.upstream.limits import MAX_MESSAGE_BYTES

# Connections open at once on `remote.sock`: its bridges plus a few RPCs (`status`, `auth.start`, and
# `auth.wait`, which holds its connection for the whole login). One past this gets LIMIT_REACHED and is closed.
REMOTE_MAX_CONNECTIONS = 48
# Bridges open at once through `remote.sock`: a dev box running three agents with eight shared servers each
# uses 24. Each one holds a descriptor and an upstream session here.
REMOTE_MAX_BRIDGES = 32
# Bridges open at once through every socket: a limit on descriptors and upstream sessions, far above what
# agents use (a bridge is one MCP server of one agent session), so the local ones always have room.
MAX_BRIDGES = 512
# A remote connection is refused while fewer descriptors than this are left under RLIMIT_NOFILE: the user's
# own `chctl` needs one for its connection, a few for the token and lock files it touches, and the refresher
# its HTTP connections.
DESCRIPTOR_RESERVE = 64
# A refused connection is answered after its request line is read (closing a Unix socket with unread data
# resets it, and the client would never see why), waiting this long at most for that line...
REFUSAL_READ_S = 1.0
# ...and this many at a time: past that, a flood's connections are closed at once, unanswered, so refusing
# costs no more descriptors than this.
REFUSALS_AT_ONCE = 16
# Bytes held in the bridges' unfinished lines (a message still arriving), all bridges together: two whole
# messages of the largest size. Without it 16 bridges each sending 60 MiB without a line ending cost 980 MiB.
BRIDGE_BUFFER_BUDGET_BYTES = 2 * MAX_MESSAGE_BYTES
# Of that, what the remote bridges may hold together: one largest message. The other half stays the local
# bridges'. A bridge whose line would overrun its budget is closed.
REMOTE_BRIDGE_BUFFER_BUDGET_BYTES = MAX_MESSAGE_BYTES
# A remote bridge with no byte in either direction for this long is closed: an agent session left open overnight
# on the dev box holds no slot. The dev box's daemon opens it again, replaying the client's `initialize`, at
# its next request. Local bridges have no such limit: `chctl bridge` would reconnect at once, for nothing.
REMOTE_BRIDGE_IDLE_S = 15 * 60.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one socket's peers may open at once (None: the local socket's, no limit of its own)."""

    max_connections: int
    max_bridges: int
    descriptor_reserve: int
    who: str  # in a refusal: "from other machines"


REMOTE_SOCKET_LIMITS = ConnectionLimits(
    REMOTE_MAX_CONNECTIONS, REMOTE_MAX_BRIDGES, DESCRIPTOR_RESERVE, "from other machines"
)


class ByteBudget:
    """Bytes that may be held at once, shared by everyone who takes from it; a budget with a `parent` takes
    from both (the remote bridges' share of all the bridges' budget)."""

    def __init__(self, limit: int, parent: ByteBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0

    def take(self, size: int) -> bool:
        """Take `size` bytes if they fit here (and in the parent); False, taking nothing, if not."""
        if self.used + size > self.limit:
            return False
        if self.parent is not None and not self.parent.take(size):
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size
        if self.parent is not None:
            self.parent.give(size)


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    """What one kind of bridge (local or remote) may hold: its buffer budget and how long it may sit idle. (Half
    a message that gets no byte for `CH_RPC_IDLE_TIMEOUT_S` closes any bridge, as it closes an RPC connection.)"""

    budget: ByteBudget
    idle_s: float | None  # None: no idle limit


def bridge_limits() -> tuple[BridgeLimits, BridgeLimits]:
    """The local and the remote bridges' limits, the remote budget a share of the one they all draw on."""
    everyone = ByteBudget(BRIDGE_BUFFER_BUDGET_BYTES)
    remote = ByteBudget(REMOTE_BRIDGE_BUFFER_BUDGET_BYTES, parent=everyone)
    return BridgeLimits(everyone, None), BridgeLimits(remote, REMOTE_BRIDGE_IDLE_S)
