"""run_authorization_flow against fault-injecting fake servers (tests/oauth_fakes.py)."""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from context_harness.config.format import substitutions
from context_harness.oauth.flow import AuthorizationGrant, FlowRequest, run_authorization_flow
from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.stores.client_store import ClientStore
from tests.oauth_fakes import FakeWorld, browser, query_of, running_world


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> ClientStore:
    return ClientStore(tmp_path / "clients")


async def run(
    world: FakeWorld,
    session: aiohttp.ClientSession,
    store: ClientStore,
    *,
    times: int = 1,
    on_authorization_url: Any = None,
    paste: asyncio.Queue[str] | None = None,
    **request: Any,
) -> tuple[Result[AuthorizationGrant], list[Any], list[Any]]:
    """One login through `browser`; `request` holds FlowRequest fields."""
    on_url, visits = browser(times)
    shown: list[str] = []

    def show(url: str) -> None:
        shown.append(url)
        on_url(url)

    with capture_logs() as logs:
        result = await run_authorization_flow(
            session,
            FlowRequest(server_name="fake", server_url=world.server_url, markers=substitutions(), **request),
            client_store=store,
            on_authorization_url=show if on_authorization_url is None else on_authorization_url,
            paste=paste,
        )
    seen = await asyncio.wait_for(visits, 5) if shown else []
    return result, seen, logs


def assert_no_secret(world: FakeWorld, *texts: object) -> None:
    blob = "\n".join(repr(t) for t in texts)
    for secret in world.secrets():
        assert secret not in blob


async def test_full_flow_registers_a_native_client_and_returns_tokens(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld()) as world:
        result, visits, logs = await run(world, session, store)
        assert isinstance(result, Success), result
        grant = result.value
        assert grant.tokens.access_token == world.issued_tokens[0]
        assert grant.tokens.refresh_token == world.issued_tokens[1]
        assert grant.tokens.expires_at is not None
        assert (grant.issuer, grant.token_endpoint, grant.client_id) == (
            world.issuer,
            world.issuer + "/token",
            "client-1",
        )
        assert grant.resource == world.server_url
        assert grant.scopes == ["mcp:read", "offline_access"]  # the challenge's scope, plus offline_access
        # DCR, as docs/design.md ("Logging in") says.
        registration = world.registrations[0]
        assert registration["application_type"] == "native"
        assert registration["token_endpoint_auth_method"] == "none"
        assert registration["grant_types"] == ["authorization_code", "refresh_token"]
        assert registration["redirect_uris"] == [grant.redirect_uri]
        # PKCE S256 and resource on both requests.
        params = world.authorize_params[0]
        assert params["code_challenge_method"] == "S256" and params["resource"] == world.server_url
        assert world.token_forms[0]["resource"] == world.server_url
        assert world.token_forms[0]["redirect_uri"] == grant.redirect_uri
        assert world.redeemed_codes == world.issued_codes  # one code, redeemed once
        # Registration kept for next time, bound to the issuer.
        stored = store.get("fake", world.issuer)
        assert stored is not None and stored.client_id == "client-1"
        assert visits[0].status == 200 and "Signed in" in visits[0].text
        assert_no_secret(world, logs, visits, grant)


async def test_second_login_reuses_the_registration_and_its_port(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld()) as world:
        first, _, _ = await run(world, session, store)
        second, _, _ = await run(world, session, store)
        assert isinstance(first, Success) and isinstance(second, Success)
        assert len(world.registrations) == 1
        assert second.value.client_id == first.value.client_id
        assert second.value.redirect_uri == first.value.redirect_uri  # the registered port, tried first


async def test_registration_for_another_issuer_is_not_reused(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    store.save(
        "fake",
        ClientRegistration(
            issuer="https://old.example", client_id="old", redirect_uris=["http://127.0.0.1:1/callback"]
        ),
    )
    async with running_world(FakeWorld()) as world:
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Success) and result.value.client_id == "client-1"
        assert len(world.registrations) == 1


async def test_fixed_port_with_a_different_registered_redirect_registers_again(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld()) as world:
        store.save(
            "fake",
            ClientRegistration(issuer=world.issuer, client_id="old", redirect_uris=["http://127.0.0.1:1/callback"]),
        )
        result, _, _ = await run(world, session, store, port=free_port())
        assert isinstance(result, Success) and result.value.client_id == "client-1"
        reg = store.get("fake", world.issuer)
        assert reg is not None and reg.redirect_uris == [result.value.redirect_uri]


async def test_explicit_client_id_skips_registration(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld(registration_endpoint=False)) as world:
        result, _, _ = await run(world, session, store, client_id="preregistered", scopes=["mcp:write"])
        assert isinstance(result, Success)
        assert world.registrations == []
        remembered = store.get("fake", world.issuer)  # so a plain `chctl auth fake` works next time
        assert remembered is not None and remembered.preregistered and remembered.client_id == "preregistered"
        assert world.authorize_params[0]["client_id"] == "preregistered"
        assert world.authorize_params[0]["scope"] == "mcp:write offline_access"


CIMD_URL = "https://context-harness.example/client-metadata.json"


async def test_a_configured_client_metadata_document_is_the_client_id_where_advertised(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(client_id_metadata_documents=True)) as world:
        result, _, _ = await run(world, session, store, client_metadata_url=CIMD_URL)
        assert isinstance(result, Success) and result.value.client_id == CIMD_URL
        assert world.registrations == [] and world.authorize_params[0]["client_id"] == CIMD_URL


async def test_a_client_metadata_document_is_not_used_where_not_advertised(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld()) as world:
        result, _, _ = await run(world, session, store, client_metadata_url=CIMD_URL)
        assert isinstance(result, Success) and result.value.client_id == "client-1"  # registered instead
        assert len(world.registrations) == 1


async def test_no_registration_endpoint_and_no_client_id_asks_for_one(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(registration_endpoint=False)) as world:
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Failure) and result.code is ErrorCode.AUTH_REQUIRED
        assert "--client-id" in (result.hint or "")
        assert world.authorize_params == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("knobs", "code"),
    [
        ({"send_iss": False}, ErrorCode.STATE_MISMATCH),  # advertised but missing
        ({"wrong_iss": True}, ErrorCode.STATE_MISMATCH),
        ({"deny": True}, ErrorCode.ACCESS_DENIED),
        ({"token_status": 500}, ErrorCode.NETWORK),
    ],
)
async def test_callback_and_token_faults_end_the_flow_with_a_clear_code(
    session: aiohttp.ClientSession, store: ClientStore, knobs: dict[str, Any], code: ErrorCode
) -> None:
    async with running_world(FakeWorld(**knobs)) as world:
        result, visits, logs = await run(world, session, store, timeout_s=10)
        assert isinstance(result, Failure) and result.code is code, result
        assert visits[0].status == 200 and "Signed in" not in visits[0].text
        if code is not ErrorCode.NETWORK:
            assert world.token_forms == []  # the code is never redeemed after a failed check
        assert_no_secret(world, logs, visits, result)


async def test_forged_callbacks_during_a_real_flow_get_400_and_the_real_answer_still_wins(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    forged_visits: list[tuple[int, str]] = []
    real_on_url, visits = browser()

    async def attacker_then_user(url: str) -> None:
        redirect_uri = query_of(url)["redirect_uri"]
        async with aiohttp.ClientSession() as attacker:
            for query in ("code=EVILCODE&state=forged", "error=access_denied&state=forged", "code=EVILCODE"):
                async with attacker.get(f"{redirect_uri}?{query}") as resp:
                    forged_visits.append((resp.status, await resp.text()))
        real_on_url(url)

    async with running_world(FakeWorld()) as world:
        result, seen, logs = await run(world, session, store, on_authorization_url=attacker_then_user, timeout_s=10)
        seen = await asyncio.wait_for(visits, 5)
        assert isinstance(result, Success), result
        assert [status for status, _ in forged_visits] == [400, 400, 400]
        assert all("EVILCODE" not in text for _, text in forged_visits)
        assert [f["code"] for f in world.token_forms] == world.issued_codes  # only the real code was redeemed
        assert seen[0].status == 200 and "Signed in" in seen[0].text
        assert_no_secret(world, logs, seen, result)


async def test_a_response_with_a_wrong_state_does_not_end_the_flow(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(tamper_state=True)) as world:
        result, visits, _ = await run(world, session, store, timeout_s=1)
        assert isinstance(result, Failure) and result.code is ErrorCode.TIMEOUT, result
        assert visits[0].status == 400
        assert world.token_forms == []


async def test_missing_iss_is_accepted_when_not_advertised(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld(send_iss=False, advertise_iss=False)) as world:
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Success)


@pytest.mark.parametrize(
    ("knobs", "needle"),
    [
        ({"issuer_override": "http://127.0.0.1:1/evil"}, "issuer"),
        ({"challenge_methods": ["plain"]}, "S256"),
        ({"resource_override": "http://127.0.0.1:1/other"}, "protected resource"),
        ({"registration_status": 400}, "refused to register"),
    ],
)
async def test_metadata_and_registration_faults_stop_before_the_browser(
    session: aiohttp.ClientSession, store: ClientStore, knobs: dict[str, Any], needle: str
) -> None:
    async with running_world(FakeWorld(**knobs)) as world:
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR
        assert needle in result.error and result.hint
        assert world.authorize_params == []
        assert store.get("fake", world.issuer) is None  # nothing written


async def test_discovery_works_without_a_challenge_header(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld(challenge_header=False)) as world:
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Success)
        assert result.value.scopes == ["mcp:read", "mcp:write", "offline_access"]  # scopes_supported


async def test_token_endpoint_timeout_is_timeout(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld(token_delay_s=10)) as world:
        result, _, _ = await run(world, session, store, http_timeout_s=0.3)
        assert isinstance(result, Failure) and result.code is ErrorCode.TIMEOUT


async def test_flow_timeout_when_the_user_never_returns(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld()) as world:
        urls: list[str] = []
        result, _, logs = await run(world, session, store, on_authorization_url=urls.append, timeout_s=0.2)
        assert isinstance(result, Failure) and result.code is ErrorCode.TIMEOUT
        assert len(urls) == 1
        # The listener is closed: the late browser finds nobody.
        redirect = query_of(urls[0])["redirect_uri"]
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(redirect + "?code=x&state=y"):
                pass


async def test_callback_hit_twice_redeems_once(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld(token_delay_s=10)) as world:
        pages: list[tuple[int, str]] = []
        tasks: list[asyncio.Task[None]] = []

        async def hit(url: str) -> None:
            async with aiohttp.ClientSession() as s, s.get(url) as resp:
                pages.append((resp.status, await resp.text()))

        async def user(url: str) -> None:
            async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as resp:
                location = resp.headers["Location"]
            first = asyncio.create_task(hit(location))
            await until(lambda: bool(world.token_forms))  # the flow is redeeming the first code
            await hit(location)  # the user reloads the tab meanwhile
            world.release.set()
            await first

        result, _, _ = await run(
            world, session, store, on_authorization_url=lambda url: tasks.append(asyncio.create_task(user(url)))
        )
        await asyncio.wait_for(tasks[0], 5)
        assert isinstance(result, Success)
        assert len(world.token_forms) == 1
        assert pages[0][0] == 409 and "already used" in pages[0][1]
        assert pages[1][0] == 200 and "Signed in" in pages[1][1]


async def until(condition: Any, deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_busy_fixed_port_fails_before_anything_is_registered(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        async with running_world(FakeWorld()) as world:
            result, _, _ = await run(world, session, store, port=holder.getsockname()[1])
            assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_PARAMS
            assert world.registrations == [] and store.get("fake", world.issuer) is None
    finally:
        holder.close()


async def test_pasted_redirect_completes_a_headless_login(session: aiohttp.ClientSession, store: ClientStore) -> None:
    async with running_world(FakeWorld()) as world:
        paste: asyncio.Queue[str] = asyncio.Queue()

        async def user_pastes(url: str) -> None:
            async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as resp:
                location = resp.headers["Location"]
            await paste.put("not a redirect")
            await paste.put(location)  # e.g. copied from a browser on another machine

        result, _, logs = await run(world, session, store, on_authorization_url=user_pastes, paste=paste)
        assert isinstance(result, Success)
        assert_no_secret(world, logs)


async def test_network_failure_on_probe_is_network(session: aiohttp.ClientSession, store: ClientStore) -> None:
    with capture_logs():
        result = await run_authorization_flow(
            session,
            FlowRequest(server_name="fake", server_url=f"http://127.0.0.1:{free_port()}/mcp", markers=substitutions()),
            client_store=store,
            on_authorization_url=lambda url: None,
        )
    assert isinstance(result, Failure) and result.code is ErrorCode.NETWORK


# --- recovery: dead clients, pre-registered clients, busy ports ------------------------------------------


async def test_a_client_the_server_forgot_is_registered_again_without_the_person_noticing(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(strict_clients=True, exact_redirects=True)) as world:
        first, _, _ = await run(world, session, store)
        assert isinstance(first, Success) and first.value.client_id == "client-1"
        world.forget_clients()  # the server restarted with an in-memory client store
        second, visits, _ = await run(world, session, store, timeout_s=5)
        assert isinstance(second, Success), second
        assert second.value.client_id == "client-2" and len(world.registrations) == 2
        stored = store.get("fake", world.issuer)
        assert stored is not None and stored.client_id == "client-2"
        assert len(visits) == 1  # the person saw one login page, not the server's error page


async def test_a_token_endpoint_that_forgot_the_client_drops_it_so_the_next_login_registers_again(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(strict_clients=True)) as world:
        first, _, _ = await run(world, session, store)
        assert isinstance(first, Success)
        world.token_forgets_clients = True
        failed, _, logs = await run(world, session, store, timeout_s=5)
        assert isinstance(failed, Failure) and failed.code is ErrorCode.INVALID_CLIENT
        assert "chctl auth fake" in (failed.hint or "") and "new client" in (failed.hint or "")
        assert store.get("fake", world.issuer) is None
        world.token_forgets_clients = False
        again, _, _ = await run(world, session, store, timeout_s=5)
        assert isinstance(again, Success) and again.value.client_id == "client-2"
        assert_no_secret(world, logs, failed)


async def test_a_redirect_uri_the_preregistered_app_does_not_allow_is_named_at_once(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    world_knobs = FakeWorld(strict_clients=True, exact_redirects=True, registration_endpoint=False)
    world_knobs.preregistered = {"my-app": ["http://127.0.0.1:1/callback"]}
    async with running_world(world_knobs) as world:
        result, visits, _ = await run(world, session, store, client_id="my-app", timeout_s=30)
        assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_CLIENT
        assert "redirect URI http://127.0.0.1:" in result.error and "my-app" in result.error
        assert "http://127.0.0.1/callback" in (result.hint or "")
        assert visits == []  # nobody was sent to the error page
        assert store.get("fake", world.issuer) is None  # a refused client is not remembered


async def test_a_preregistered_client_is_remembered_for_the_next_plain_login(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    world_knobs = FakeWorld(strict_clients=True, registration_endpoint=False)
    world_knobs.preregistered = {"my-app": []}
    async with running_world(world_knobs) as world:
        first, _, _ = await run(world, session, store, client_id="my-app")
        assert isinstance(first, Success)
        second, _, _ = await run(world, session, store)  # no --client-id: what every hint says to run
        assert isinstance(second, Success), second
        assert second.value.client_id == "my-app" and world.registrations == []
        assert second.value.redirect_uri == first.value.redirect_uri  # the port used before, tried first
        path = store.directory / "fake.json"
        assert path.stat().st_mode & 0o777 == 0o600


def time_wait_port() -> int:
    """A port with a connection in TIME_WAIT on the listening side, as a finished login leaves it (our
    listener sets SO_REUSEADDR; Linux lets a new socket bind over TIME_WAIT only when both did)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


async def test_a_fixed_port_in_time_wait_is_usable_at_once(session: aiohttp.ClientSession, store: ClientStore) -> None:
    port = time_wait_port()
    async with running_world(FakeWorld()) as world:
        result, _, _ = await run(world, session, store, port=port)
        assert isinstance(result, Success), result
        assert result.value.redirect_uri == f"http://127.0.0.1:{port}/callback"


async def test_a_busy_registered_port_means_a_new_registration_not_a_mismatched_redirect(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(strict_clients=True, exact_redirects=True)) as world:
        first, _, _ = await run(world, session, store)
        assert isinstance(first, Success)
        registered_port = int(first.value.redirect_uri.split(":")[2].split("/")[0])
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", registered_port))
            holder.listen()
            second, _, _ = await run(world, session, store, timeout_s=5)
        assert isinstance(second, Success), second
        assert second.value.client_id == "client-2"
        assert second.value.redirect_uri != first.value.redirect_uri


async def test_the_chosen_token_auth_method_is_used_and_remembered(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(registration_endpoint=False)) as world:
        result, _, _ = await run(
            world,
            session,
            store,
            client_id="my-app",
            client_secret="my-app-secret",
            token_auth_method="client_secret_post",
        )
        assert isinstance(result, Success) and result.value.token_endpoint_auth_method == "client_secret_post"
        assert world.token_forms[0]["client_secret"] == "my-app-secret"  # in the form, as chosen: not Basic
        remembered = store.get("fake", world.issuer)
        assert remembered is not None and remembered.token_endpoint_auth_method == "client_secret_post"


def test_a_flow_request_never_shows_its_client_secret() -> None:
    request = FlowRequest(
        server_name="fake",
        server_url="https://mcp.example/mcp",
        markers=substitutions(),
        client_id="my-app",
        client_secret="s3cret",
    )
    assert "s3cret" not in repr(request) and "my-app" in repr(request)


# --- the other way of sending the secret (issue 17 §5) ------------------------------------------------


@pytest.mark.parametrize(
    ("server_wants", "chosen"),
    [("client_secret_post", None), ("client_secret_basic", "client_secret_post")],
)
async def test_a_secret_refused_one_way_is_sent_once_the_other_and_that_way_is_remembered(
    session: aiohttp.ClientSession, store: ClientStore, server_wants: str, chosen: str | None
) -> None:
    async with running_world(FakeWorld(registration_endpoint=False, secret_method=server_wants)) as world:
        result, _, logs = await run(
            world, session, store, client_id="my-app", client_secret="my-app-secret", token_auth_method=chosen
        )
        assert isinstance(result, Success), result
        assert result.value.token_endpoint_auth_method == server_wants
        assert len(world.token_forms) == 2 and len(world.redeemed_codes) == 1  # the code, redeemed once
        remembered = store.get("fake", world.issuer)
        assert remembered is not None and remembered.token_endpoint_auth_method == server_wants
        assert_no_secret(world, logs, result)


async def test_a_stored_client_refused_with_basic_learns_the_method_the_server_takes(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    """A registration answered with a secret and no method is stored as Basic (RFC 7591's default)."""
    async with running_world(FakeWorld(secret_method="client_secret_post")) as world:
        registration = ClientRegistration(
            issuer=world.issuer,
            client_id="client-1",
            client_secret="dcr-secret",
            token_endpoint_auth_method="client_secret_basic",
            preregistered=True,
        )
        store.save("fake", registration)
        result, _, _ = await run(world, session, store)
        assert isinstance(result, Success), result
        assert world.token_auth_headers[0] is not None and world.token_forms[1]["client_secret"] == "dcr-secret"
        remembered = store.get("fake", world.issuer)
        assert remembered is not None and remembered.token_endpoint_auth_method == "client_secret_post"


async def test_invalid_grant_is_never_retried_the_code_is_single_use(
    session: aiohttp.ClientSession, store: ClientStore
) -> None:
    async with running_world(FakeWorld(registration_endpoint=False, token_error="invalid_grant")) as world:
        result, _, _ = await run(world, session, store, client_id="my-app", client_secret="my-app-secret")
        assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_GRANT
        assert len(world.token_forms) == 1
