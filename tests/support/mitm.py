"""mitmproxy's `mitmdump` as the company's TLS-intercepting proxy: regular proxy mode on 127.0.0.1, re-signing
every HTTPS connection with its own CA (made fresh in a temporary confdir), trusting the test CA upstream.

The daemon never sends loopback traffic through a proxy, so the tests name their servers `mcp.test` (TEST_HOST),
and mitmdump, like a company proxy, resolves that name: to 127.0.0.1, by the addon in mitm_hosts.py.

mitmproxy's dependencies clash with ours, so it lives in a venv of its own: `scripts/test` makes `.venv-mitm`
(pinned version below); `CH_TEST_MITMDUMP` may name another `mitmdump`. Tests that need it are skipped, saying
so, when there is none.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.daemon import wait_for

MITMPROXY_VERSION = "11.0.2"
REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 60.0  # mitmdump imports a lot; two loaded cores are slow
TEST_HOST = "mcp.test"  # RFC 6761's .test: never a real host; the proxy maps it to 127.0.0.1
HOSTS_ADDON = Path(__file__).resolve().parent / "mitm_hosts.py"


def mitmdump_path() -> str:
    candidates = [os.environ.get("CH_TEST_MITMDUMP"), str(REPO / ".venv-mitm" / "bin" / "mitmdump")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("mitmdump")
    if found is None:
        pytest.skip(f"no mitmdump: run scripts/test, or pip install mitmproxy=={MITMPROXY_VERSION} in .venv-mitm")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MitmProxy:
    confdir: Path
    upstream_ca: Path  # the CA that signs the real servers' certificates
    proxyauth: str | None = None  # "user:pass": the proxy answers 407 without them
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> Path:
        """The proxy's own CA: what a company hands its developers as CH_CA_BUNDLE."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def log_path(self) -> Path:
        return self.confdir / "mitmdump.log"

    def flows(self) -> str:
        """mitmdump's flow log: one line per request it carried."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> MitmProxy:
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        argv = [
            mitmdump_path(),
            "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
            "--set", f"confdir={self.confdir}",
            "--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}",
            "--set", "flow_detail=1",
            # Pass bodies on as they arrive, as the companies' proxies do for event streams (mitmproxy would
            # otherwise hold an SSE stream until it ends).
            "--set", "stream_large_bodies=1",
            "-s", str(HOSTS_ADDON),
            "--set", "showhost=true",  # the log shows the name the client asked for, not the address it maps to
        ]  # fmt: skip
        if self.proxyauth:
            argv += ["--proxyauth", self.proxyauth]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | {"CH_TEST_HOSTS": TEST_HOST}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        wait_for(
            lambda: "listening at" in self.flows() or self.proc.poll() is not None,  # type: ignore[union-attr]
            START_DEADLINE_S,
            interval_s=0.1,
            what="mitmdump to listen",
        )
        assert self.proc.poll() is None, f"mitmdump exited: {self.flows()}"
        wait_for(self.ca_pem.exists, START_DEADLINE_S, what="mitmproxy's CA")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for_flow(proxy: MitmProxy, text: str, deadline_s: float = 10.0) -> None:
    """mitmdump writes a flow's line once the response is done: poll for it."""
    wait_for(lambda: text in proxy.flows(), deadline_s, interval_s=0.05, what=f"{text!r} in mitmdump's flow log")
