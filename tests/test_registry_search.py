"""`chctl search TEXT`: the servers of every MCP registry in CH_REGISTRY_URL (and chctl's own list), from a
local registry shaped as the official API documents it; pages followed, answers cached (and shown from the cache,
with their age, when the registry is down), two registries at once."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest

from tests.peers.mcp_registry import LocalRegistry, remote, server_json, serving
from tests.support.env import UserEnv
from tests.support.registry import StartDaemon, keyed_server, run

URL = "https://weather.example.com/mcp"  # never asked: a search only lists


@pytest.fixture
async def registry() -> AsyncIterator[LocalRegistry]:
    async with serving(LocalRegistry()) as running:
        yield running


def publish_weather(registry: LocalRegistry) -> None:
    registry.publish(keyed_server("io.github.acme/weather", URL))
    registry.publish(
        server_json("io.github.acme/weather-legacy", "The old forecasts", remotes=[remote(URL, transport="sse")]),
        status="deprecated",
        status_message="use io.github.acme/weather",
    )
    registry.publish(
        server_json(
            "io.github.acme/weather-local",
            "Forecasts on your machine",
            packages=[{"registryType": "npm", "identifier": "@acme/weather", "transport": {"type": "stdio"}}],
        )
    )
    registry.publish(server_json("io.github.acme/calendar", "Not about the weather", remotes=[remote(URL)]))
    registry.publish(server_json("io.github.acme/gone-weather", "Deleted", remotes=[remote(URL)]), status="deleted")


def line_of(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if line.split()[:1] == [name]]
    return line


async def test_search_shows_name_description_transport_auth_and_status(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    publish_weather(registry)
    start_daemon(registry)
    done = await run(user_env, "search", "weather")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["NAME", "DESCRIPTION", "TRANSPORT", "AUTH", "STATUS"]
    keyed = line_of(done.stdout, "io.github.acme/weather")
    assert re.search(r"A keyed test server\s+streamable-http\s+key: X-API-Key\s+active$", keyed), keyed
    legacy = line_of(done.stdout, "io.github.acme/weather-legacy")
    assert re.search(r"\ssse\s+OAuth or none\s+deprecated$", legacy), legacy
    assert re.search(r"\sstdio only\s+-\s+active$", line_of(done.stdout, "io.github.acme/weather-local"))
    assert "calendar" not in done.stdout  # the registry's search is on the name
    assert "gone-weather" not in done.stdout  # deleted servers are not listed
    assert "asked just now" in done.stderr
    [asked] = registry.requests
    assert asked.startswith("/v0.1/servers?") and {"search=weather", "limit=100", "version=latest"} <= set(
        asked.partition("?")[2].split("&")
    )

    as_json = json.loads((await run(user_env, "search", "weather", "--json")).stdout)
    by_name = {server["name"]: server for server in as_json["servers"]}
    assert by_name["io.github.acme/weather-legacy"]["status"] == "deprecated"
    assert by_name["io.github.acme/weather"]["registry"] == registry.base.removeprefix("http://")


async def test_search_also_lists_chctls_own_servers(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    start_daemon(registry)
    done = await run(user_env, "search", "context7")
    assert re.search(r"^context7\s.*streamable-http\s+key: CONTEXT7_API_KEY\s+active$", done.stdout, re.MULTILINE)


async def test_every_page_is_followed(registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv) -> None:
    for number in range(130):
        registry.publish(server_json(f"io.test/tool-{number:03}", f"tool number {number}", remotes=[remote(URL)]))
    registry.publish(server_json("io.test/other", "not a tool", remotes=[remote(URL)]))
    start_daemon(registry)
    result = json.loads((await run(user_env, "search", "tool", "--json")).stdout)
    listed = sorted(server["name"] for server in result["servers"] if server["registry"] != "chctl")
    assert listed == [f"io.test/tool-{n:03}" for n in range(130)]
    first, second = registry.requests
    assert "cursor=" not in first and "cursor=io.test/tool-099:1.0.0" in second  # the cursor it was given
    assert result["registries"][0]["stopped"] is None


async def test_a_second_search_comes_from_the_cache_and_says_how_old_it_is(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    publish_weather(registry)
    start_daemon(registry)
    first = await run(user_env, "search", "weather")
    second = await run(user_env, "search", "weather")
    assert len(registry.requests) == 1
    assert second.stdout == first.stdout
    assert re.search(r": 3 servers, from the cache \(\d+s ago\)", second.stderr), second.stderr


async def test_a_registry_that_is_down_is_shown_from_the_cache_with_its_age(
    start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    async with serving(LocalRegistry()) as registry:
        publish_weather(registry)
        start_daemon(registry, CH_REGISTRY_CACHE_TTL_S="0")  # every search asks again
        fresh = await run(user_env, "search", "weather")
        assert "asked just now" in fresh.stderr
        registry.down = True
        unavailable = await run(user_env, "search", "weather")
        assert unavailable.stdout == fresh.stdout
        assert re.search(r"HTTP 503: showing its answer from the cache, \d+s ago", unavailable.stderr)
    gone = await run(user_env, "search", "weather")  # nothing listens there any more
    assert gone.returncode == 0 and gone.stdout == fresh.stdout
    assert re.search(r"cannot connect to 127\.0\.0\.1:\d+: showing its answer from the cache", gone.stderr)
    never_asked = await run(user_env, "search", "forecast")
    assert "no server's name holds 'forecast'" in never_asked.stdout
    assert "cannot connect" in never_asked.stderr


async def test_two_registries_are_searched_together(start_daemon: StartDaemon, user_env: UserEnv) -> None:
    async with serving(LocalRegistry()) as public, serving(LocalRegistry()) as company:
        public.publish(keyed_server("io.github.acme/weather", URL))
        company.publish(server_json("com.example/weather-internal", "Our own forecasts", remotes=[remote(URL)]))
        start_daemon(public, company)
        done = await run(user_env, "search", "weather")
        assert done.stdout.splitlines()[0].split()[-1] == "REGISTRY"
        public_host, company_host = (r.base.removeprefix("http://") for r in (public, company))
        assert line_of(done.stdout, "io.github.acme/weather").endswith(public_host)
        assert line_of(done.stdout, "com.example/weather-internal").endswith(company_host)
        assert len(public.requests) == len(company.requests) == 1
        assert (await run(user_env, "init")).returncode == 0
        added = await run(user_env, "add", "com.example/weather-internal")  # the first registry has no such server
        assert added.returncode == 0, added.stderr
        assert f"(com.example/weather-internal 1.0.0 from {company_host})" in added.stdout
        assert "/versions/latest" in public.requests[-1] and "/versions/latest" in company.requests[-1]


async def test_a_registry_url_that_is_plain_http_to_another_machine_is_left_out(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    publish_weather(registry)
    start_daemon(registry, "http://registry.example.com", "ftp://x")
    done = await run(user_env, "search", "weather")
    assert "io.github.acme/weather" in done.stdout
    assert "warning: CH_REGISTRY_URL: http://registry.example.com is plain http to another machine" in done.stderr
    assert "warning: CH_REGISTRY_URL: ftp://x is not an http(s) URL with a host; left out" in done.stderr
    doctor = await run(user_env, "doctor")
    assert "! CH_REGISTRY_URL: http://registry.example.com is plain http to another machine" in doctor.stdout
    assert "hint: set CH_REGISTRY_URL" in doctor.stdout


async def test_search_text_with_control_characters_is_refused(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    start_daemon(registry)
    done = await run(user_env, "search", "weather\x1b]0;owned\x07")
    assert done.returncode == 1 and done.stderr.startswith("error[INVALID_PARAMS]")
    assert registry.requests == []
