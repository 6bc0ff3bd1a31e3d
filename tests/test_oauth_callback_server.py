import asyncio
import socket

import aiohttp
import pytest
from structlog.testing import capture_logs

from context_harness.oauth.callback_server import CallbackServer, CallbackServerError, query_from_pasted_url
from context_harness.primitives.result import ErrorCode, Failure, Success


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def test_first_callback_wins_and_a_second_hit_is_told_the_link_was_used() -> None:
    async with CallbackServer() as server:
        assert server.redirect_uri.startswith("http://127.0.0.1:")
        first = asyncio.create_task(get(server.redirect_uri + "?code=SECRETCODE&state=S"))
        result = await server.wait(5)
        assert result == Success({"code": "SECRETCODE", "state": "S"})
        server.finish("Signed in", "All good.")
        status, text = await first
        assert status == 200 and "Signed in" in text and "SECRETCODE" not in text
        status, text = await get(server.redirect_uri + "?code=OTHER&state=S")
        assert status == 409 and "already used" in text
        assert server.deliver({"code": "LATE"}) is False


async def test_error_page_is_escaped_plain_words() -> None:
    async with CallbackServer() as server:
        task = asyncio.create_task(
            get(server.redirect_uri + "?error=access_denied&state=S&error_description=%3Cscript%3E")
        )
        assert isinstance(await server.wait(5), Success)
        await server.close()  # the flow gave no verdict: the browser still gets a page at once
        status, text = await task
        assert status == 200 and "<script>" not in text


def test_default_page_for_an_error_describes_it_escaped() -> None:
    from context_harness.oauth.callback_server import describe_response, page

    title, message = describe_response({"error": "server_error", "error_description": "<b>bad</b>"})
    html = page(title, message)
    assert "&lt;b&gt;bad&lt;/b&gt;" in html and "<b>" not in html
    assert describe_response({"error": "access_denied"})[0] == "Access declined"


async def test_requests_without_code_or_error_do_not_consume_the_listener() -> None:
    async with CallbackServer() as server:
        status, _ = await get(server.redirect_uri)
        assert status == 400
        status, _ = await get(server.redirect_uri.replace("/callback", "/favicon.ico"))
        assert status == 404
        assert server.deliver({"code": "C", "state": "S"}) is True
        assert await server.wait(1) == Success({"code": "C", "state": "S"})


async def test_wait_times_out_with_timeout_code() -> None:
    async with CallbackServer() as server:
        result = await server.wait(0.05)
        assert isinstance(result, Failure) and result.code is ErrorCode.TIMEOUT and result.hint


async def test_busy_fixed_port_is_a_clear_failure() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = await CallbackServer(port).start()
        assert isinstance(result, Failure)
        assert (
            result.code is ErrorCode.INVALID_PARAMS
            and f"port {port}" in result.error
            and "--port" in (result.hint or "")
        )
        with pytest.raises(CallbackServerError):
            async with CallbackServer(port):
                pass
    finally:
        holder.close()


async def test_fixed_port_is_used_and_released_on_close() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = CallbackServer(port)
    assert await server.start() == Success(f"http://127.0.0.1:{port}/callback")
    await server.close()
    again = CallbackServer(port)
    assert isinstance(await again.start(), Success)
    await again.close()


async def test_listener_logs_neither_code_nor_state() -> None:
    with capture_logs() as logs:
        async with CallbackServer() as server:
            task = asyncio.create_task(get(server.redirect_uri + "?code=SECRETCODE&state=SECRETSTATE"))
            await server.wait(5)
            server.finish("ok", "ok")
            await task
    assert "SECRET" not in repr(logs)
    assert server.port is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "http://127.0.0.1:5/callback?code=C&state=S&iss=https%3A%2F%2Fa",
            {"code": "C", "state": "S", "iss": "https://a"},
        ),
        ("  ?code=C&state=S\n", {"code": "C", "state": "S"}),
        ("error=access_denied&state=S", {"error": "access_denied", "state": "S"}),
    ],
)
def test_pasted_redirects(text: str, expected: dict[str, str]) -> None:
    assert query_from_pasted_url(text) == Success(expected)


def test_pasted_garbage_is_invalid_params() -> None:
    result = query_from_pasted_url("https://example.com/hello")
    assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_PARAMS
