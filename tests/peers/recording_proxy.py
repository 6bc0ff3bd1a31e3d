"""An HTTP forward proxy that writes down everything it is sent: it stands in for a proxy on another host, which
reads whatever crosses it in clear text. It forwards plain-http requests (absolute-form) and streams the answers
back, so a client that goes through it keeps working and the record shows what it gave away; `--answer 407`
makes it refuse every request as a proxy that wants credentials does. A `CONNECT` (an https target) is
recorded and refused: the tests that need a tunnel use mitmproxy.

Run:  python tests/peers/recording_proxy.py --record FILE [--answer 407]
FILE gets one JSON line per request: {"method", "target", "headers", "body"} (the body as latin-1 text).
When serving it prints one line: {"url": "http://127.0.0.1:N", "port": N}. It exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

NOT_PASSED_ON = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "host"}


def make_app(record: Path, answer: int | None) -> web.Application:
    async def carry(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = {
            "method": request.method,
            "target": str(request.url) if request.method != "CONNECT" else request.path,
            "headers": dict(request.headers),
            "body": body.decode("latin-1"),
        }
        with record.open("a") as out:
            out.write(json.dumps(entry) + "\n")
        if answer is not None:
            return web.Response(status=answer, headers={"Proxy-Authenticate": 'Basic realm="corp"'})
        if request.method == "CONNECT" or request.url.scheme != "http":
            return web.Response(status=405, text="this proxy carries plain http only")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_PASSED_ON}
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method, str(request.url), headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in NOT_PASSED_ON | {"content-length"}:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session_context(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", carry)
    return app


async def serve(record: Path, answer: int | None) -> None:
    runner = web.AppRunner(make_app(record, answer))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "port": port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, lambda: sys.stdin.buffer.read())
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--answer", type=int)
    args = parser.parse_args()
    asyncio.run(serve(args.record, args.answer))


if __name__ == "__main__":
    main()
