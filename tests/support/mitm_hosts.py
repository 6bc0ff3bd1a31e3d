"""A mitmproxy addon (loaded with `mitmdump -s`): the names in `CH_TEST_HOSTS` are reached at 127.0.0.1, the
port kept. The daemon names its servers `mcp.test` so that its traffic goes through the proxy (loopback never
does); the proxy, like a company's, resolves the name, and this is its DNS. Standard library only: it runs in
mitmproxy's own venv."""

import os

NAMES = frozenset(name.strip().lower() for name in os.environ.get("CH_TEST_HOSTS", "").split(",") if name.strip())


class MapHosts:
    def server_connect(self, data):  # type: ignore[no-untyped-def]  # mitmproxy's ServerConnectionHookData
        host, port = data.server.address
        if str(host).lower() in NAMES:
            data.server.address = ("127.0.0.1", port)


addons = [MapHosts()]
