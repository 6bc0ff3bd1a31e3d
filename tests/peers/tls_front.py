"""An HTTPS front for a plain-HTTP peer: TLS with a given certificate, every request passed on as it is and
every response streamed back as it arrives (SSE included), the way a company's TLS terminator sits in front
of an internal server.

Run:  python tests/peers/tls_front.py --cert CHAIN.pem --key KEY.pem --upstream http://127.0.0.1:PORT
When serving it prints one line: {"url": "https://127.0.0.1:N", "port": N}. It exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp sets itself from the body it sends.
NOT_PASSED_ON = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def make_app(upstream: str) -> web.Application:
    async def pass_on(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_PASSED_ON}
        body = await request.read()
        async with session.request(
            request.method, upstream + request.path_qs, headers=headers, data=body or None, allow_redirects=False
        ) as answer:
            response = web.StreamResponse(status=answer.status)
            for name, value in answer.headers.items():
                if name.lower() not in NOT_PASSED_ON:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session_context(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", pass_on)
    return app


async def serve(cert: str, key: str, upstream: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(make_app(upstream.rstrip("/")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"url": f"https://127.0.0.1:{port}", "port": port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, lambda: sys.stdin.buffer.read())
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.cert, args.key, args.upstream))


if __name__ == "__main__":
    main()
