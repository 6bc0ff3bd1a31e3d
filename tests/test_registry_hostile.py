"""A registry is outside input: attacks from a hostile or broken one, against the real daemon and chctl.

A registry that answers 1 GiB or never ends costs bounded memory and time while `chctl status` keeps answering;
redirects are not followed; pages that never end are capped; text with control or format characters never
reaches the terminal; and nothing a registry declares that would be config syntax, travel in clear text or break
a request (a URL with substitution syntax left, plain http to another machine, a header name that is not a token,
a header the daemon sets itself, a value a client would substitute) reaches a config or a token file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.oauth_fakes import serve
from tests.peers.mcp_registry import LocalRegistry, Published, remote, server_json, serving
from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv
from tests.support.registry import StartDaemon, run, secret

MIB = 1024 * 1024
GIB = 1024 * MIB
URL = "https://weather.example.com/mcp"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def hostile(handler: Handler) -> AsyncIterator[str]:
    """A "registry" that answers every request with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    async with serve(app) as base:
        yield base


def peak_rss(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def page(count: int, start: int = 0, cursor: str | None = None) -> dict[str, Any]:
    servers = [
        Published(server_json(f"io.test/item-{start + n:05}", "an item", remotes=[remote(URL)])).response()
        for n in range(count)
    ]
    metadata: dict[str, Any] = {"count": count, **({"nextCursor": cursor} if cursor else {})}
    return {"servers": servers, "metadata": metadata}


# --- size and time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["chunked", "declared"])
async def test_a_registry_answering_1_gib_costs_a_few_mib_and_is_cut_off(
    length: str, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    sent = 0

    async def gigabyte(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        headers = {"Content-Type": "application/json"}
        if length == "declared":
            headers["Content-Length"] = str(GIB)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        chunk = b'{"server": {"name": "io.test/x", "description": "' + b"x" * (MIB - 64) + b'"}},'
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(b'{"servers": [')
            while sent < GIB:
                await response.write(chunk)
                sent += len(chunk)
        return response

    async with hostile(gigabyte) as base:
        daemon = start_daemon(base)
        assert (await run(user_env, "status")).returncode == 0
        before = peak_rss(daemon)
        done = await run(user_env, "search", "weather")
        grown = peak_rss(daemon) - before
    assert done.returncode == 0  # the search answers; this registry's part is the warning
    assert "answered more than 4 MiB (not read further)" in done.stderr
    assert grown < 32 * MIB, f"the daemon's peak RSS grew by {grown / MIB:.1f} MiB"
    assert sent < 256 * MIB  # it stopped reading long before the end
    assert (await run(user_env, "status")).returncode == 0


async def test_a_registry_that_never_ends_costs_one_request_and_status_keeps_answering(
    start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    asked = asyncio.Event()
    requests = 0

    async def drip(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        asked.set()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(b'{"servers": [')
            while True:  # a byte every half second: never silent, never done
                await asyncio.sleep(0.5)
                await response.write(b" ")
        return response

    async with hostile(drip) as base:
        start_daemon(base)
        searches = [asyncio.create_task(run(user_env, "search", "weather")) for _ in range(3)]
        await asyncio.wait_for(asked.wait(), 30)
        status = await run(user_env, "status")
        assert status.returncode == 0, status.stderr
        assert not any(search.done() for search in searches)  # status answered while they wait
        done = await asyncio.gather(*searches)
    assert requests == 1  # three searches for the same text share one request
    for search in done:
        assert search.returncode == 0
        assert "did not answer within 15 s" in search.stderr


async def test_a_redirect_is_not_followed(start_daemon: StartDaemon, user_env: UserEnv) -> None:
    async with serving(LocalRegistry()) as elsewhere:

        async def moved(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(location=f"{elsewhere.base}{request.rel_url}")

        async with hostile(moved) as base:
            start_daemon(base)
            done = await run(user_env, "search", "weather")
    assert f"answered with a redirect to {elsewhere.base}/v0.1/servers" in done.stderr
    assert "(not followed)" in done.stderr
    assert elsewhere.requests == []


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[" * 200_000, b'{"servers": "none"}'])
async def test_an_answer_that_is_not_a_server_list_is_a_warning(
    body: bytes, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    async with hostile(broken) as base:
        daemon = start_daemon(base)
        done = await run(user_env, "search", "weather")
    assert done.returncode == 0
    assert "did not answer with JSON" in done.stderr or "not a server list" in done.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None


async def test_pages_that_never_end_are_capped(start_daemon: StartDaemon, user_env: UserEnv) -> None:
    asked: list[str] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("cursor", ""))
        number = len(asked)
        return web.json_response(page(100, start=number * 100, cursor=f"page-{number}"))

    async with hostile(endless) as base:
        start_daemon(base)
        done = await run(user_env, "search", "item", "--json")
        text = await run(user_env, "search", "item")
    assert len(asked) == 5
    [registry] = json.loads(done.stdout)["registries"]
    assert registry["servers"] == 500
    assert "there may be more: more than 5 pages: narrow the search" in text.stderr


async def test_a_cursor_that_comes_back_ends_the_paging(start_daemon: StartDaemon, user_env: UserEnv) -> None:
    asked: list[str] = []

    async def loop(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("cursor", ""))
        return web.json_response(page(3, cursor="the-same-cursor"))

    async with hostile(loop) as base:
        start_daemon(base)
        done = await run(user_env, "search", "item")
    assert asked == ["", "the-same-cursor"]
    assert done.returncode == 0 and "io.test/item-00002" in done.stdout


# --- text -----------------------------------------------------------------------------------------------------

ESCAPES = "\x1b]0;owned\x07\x1b[2J"
BIDI = "\u202e"


async def test_control_and_format_characters_never_reach_the_terminal(
    start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    async with serving(LocalRegistry()) as registry:
        registry.publish(
            server_json(
                "io.test/weather",
                f"Fore{ESCAPES}casts {BIDI}txt.exe",
                title=f"T{ESCAPES}",
                version=f"1.0{ESCAPES}",
                remotes=[remote(URL, headers=[secret(f"X-Key{ESCAPES}")])],
            )
        )
        registry.publish(server_json(f"io.test/weather{ESCAPES}", "bad name", remotes=[remote(URL)]))
        registry.publish(server_json("weather-without-namespace", "bad name", remotes=[remote(URL)]))
        too_many = [{"name": f"X-H{n}", "value": "v"} for n in range(40)]
        registry.publish(server_json("io.test/weather-headers", "too many", remotes=[remote(URL, headers=too_many)]))
        registry.publish(
            server_json("io.test/weather-gone", "gone", remotes=[remote(URL)]),
            status="deleted",
            status_message=f"bye{ESCAPES}{BIDI}",
        )
        start_daemon(registry)
        done = await run(user_env, "search", "weather")
        as_json = await run(user_env, "search", "weather", "--json")
        gone = await run(user_env, "add", "io.test/weather-gone")
    for output in (done.stdout, done.stderr, as_json.stdout, gone.stderr):
        assert "\x1b" not in output and "\x07" not in output and BIDI not in output
    assert "Fore]0;owned[2Jcasts txt.exe" in done.stdout
    assert "3 entries left out (they do not fit the registry's schema)" in done.stderr
    assert "weather-without-namespace" not in done.stdout and "too many" not in done.stdout
    assert "was deleted from the registry: bye]0;owned[2J" in gone.stderr


# --- what an entry declares -----------------------------------------------------------------------------------

HOSTILE_REMOTES: dict[str, tuple[dict[str, Any], str]] = {
    "a variable's default that is a template": (
        remote("https://{tenant}.example.com/mcp", variables={"tenant": {"default": "{inner}"}}),
        "still holds substitution syntax",
    ),
    "braces that are no variable": (remote("https://mcp.example.com/{not-a-variable}"), "still holds substitution"),
    "a client's substitution in the URL": (
        remote("https://mcp.example.com/mcp?k={env:AWS_SECRET_ACCESS_KEY}"),
        "which opencode would substitute",
    ),
    "plain http to another machine": (remote("http://mcp.example.com/mcp"), "plain http to a host that is not"),
    "a header name with a space": (remote(URL, headers=[{"name": "X Bad", "value": "1"}]), "not a valid header name"),
    "a header name with a line break": (
        remote(URL, headers=[{"name": "X-Ok\r\nX-Evil", "value": "1"}]),
        "not a valid header name",
    ),
    "a header the daemon sets": (remote(URL, headers=[{"name": "Mcp-Session-Id", "value": "1"}]), "sets itself"),
    "a host header": (remote(URL, headers=[{"name": "Host", "value": "evil.example"}]), "sets itself"),
    "a header value a client substitutes": (
        remote(URL, headers=[{"name": "X-Team", "value": "{env:ANTHROPIC_API_KEY}"}]),
        "which opencode would substitute",
    ),
    "a header value Claude Code substitutes": (
        remote(URL, headers=[{"name": "X-Team", "default": "${ANTHROPIC_API_KEY}"}]),
        "Claude Code",
    ),
    "a header value with a line break": (
        remote(URL, headers=[{"name": "X-Team", "value": "eu\r\nX-Evil: 1"}]),
        "control characters",
    ),
    "a secret template chctl cannot fill": (
        remote(URL, headers=[secret("Authorization", value="Bearer {a} {b}")]),
        "value template chctl cannot fill",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_REMOTES))
async def test_what_an_entry_declares_passes_the_gate_or_nothing_is_written(
    case: str, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    declared, reason = HOSTILE_REMOTES[case]
    async with serving(LocalRegistry()) as registry:
        registry.publish(server_json("io.test/hostile", case, remotes=[declared]))
        start_daemon(registry)
        assert (await run(user_env, "init")).returncode == 0
        before = (user_env.project / "opencode.json").read_text()
        done = await run(user_env, "add", "io.test/hostile", "-k", "key-not-real", "--bridge")
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error[INVALID_PARAMS]: io.test/hostile")
    assert reason in done.stderr, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert (user_env.project / "opencode.json").read_text() == before
    assert not (user_env.ch_home / "tokens" / "hostile.json").exists()
    assert (await run(user_env, "status")).returncode == 0
