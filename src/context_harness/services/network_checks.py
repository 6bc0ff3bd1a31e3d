"""`chctl doctor`'s network checks: the proxy and the extra CA the daemon uses, and where the shell that runs
chctl differs (`HTTPS_PROXY` set in the shell but not for the daemon is the classic failure: a service does
not inherit the shell's environment). Proxies are shown as `host:port`, never with their credentials."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from context_harness.net.ca_bundle import UntrustedBundle, read_ca_bundle
from context_harness.net.proxies import from_variables
from context_harness.net.session import NetworkSettings
from context_harness.services.doctor import Check

CARRY_HINT = (
    "start the daemon from this shell (`chctl daemon stop`, then any chctl command), or run "
    "`chctl service install` again to carry this shell's variables to the service"
)


def network_checks(daemon: NetworkSettings, shell: Mapping[str, str] | None) -> list[Check]:
    """What the daemon uses; with `shell` (the variables chctl saw, proxies as host:port), where they differ."""
    used = daemon.proxies.summary()
    proxies = ", ".join(f"{name}={where}" for name, where in used.items())
    bundle = daemon.ca_bundle.path if daemon.ca_bundle is not None else None
    checks = [
        Check(
            "network_proxy", "ok", f"the daemon uses {proxies}" if used else "the daemon connects directly (no proxy)"
        ),
        _ca_check(bundle),
    ]
    if shell is None:
        return checks
    daemon_view = _by_name(used) | ({"ch_ca_bundle": str(bundle)} if bundle else {})
    shell_proxies = from_variables(shell).summary()
    shell_view = _by_name(shell_proxies) | ({"ch_ca_bundle": shell["CH_CA_BUNDLE"]} if "CH_CA_BUNDLE" in shell else {})
    for name in sorted(set(daemon_view) | set(shell_view)):
        ours, theirs = daemon_view.get(name), shell_view.get(name)
        if ours == theirs:
            continue
        shown = name.upper()
        if ours is None:
            message = f"{shown} is set in this shell ({theirs}) but not for the daemon"
        elif theirs is None:
            message = f"{shown} is set for the daemon ({ours}) but not in this shell"
        else:
            message = f"{shown} differs: {theirs} in this shell, {ours} for the daemon"
        checks.append(Check("network_differs", "warn", message, CARRY_HINT))
    return checks


def _ca_check(bundle: Path | None) -> Check:
    """The extra CA the daemon trusts, and whether others could now change that file (then the next start or
    reload refuses it: an error now, with the fix)."""
    if bundle is None:
        return Check("network_ca", "ok", "the daemon trusts the system's certificates (no CH_CA_BUNDLE)")
    try:
        read_ca_bundle(bundle)
    except UntrustedBundle as exc:
        return Check("network_ca", "error", str(exc).partition("; ")[0], str(exc).partition("; ")[2])
    except ValueError as exc:
        return Check("network_ca", "error", str(exc), "point CH_CA_BUNDLE at the company CA's PEM file")
    return Check("network_ca", "ok", f"the daemon trusts the system's certificates and CH_CA_BUNDLE={bundle}")


def _by_name(summary: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in summary.items()}
