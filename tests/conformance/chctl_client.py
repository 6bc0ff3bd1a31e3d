"""The conformance suite's client command for chctl: `python tests/conformance/chctl_client.py SERVER_URL`.

What a person does, in a fresh user environment with a daemon of its own:
1. `chctl init`, `chctl add conf --url SERVER_URL --bridge`; for the scenarios of the logins without a person, as
   their context says: `--client-credentials --client-id ID` with the secret in CONF_CLIENT_SECRET or
   `--private-key FILE --signing-alg ALG` (client credentials), or `chctl idp add corp --issuer URL --client-id ID`,
   `chctl idp login corp --id-token -` (the ID token on stdin) and `--idp corp --client-id ID` (cross-app access);
2. `chctl check conf`; when it says the server wants a login, `chctl auth conf` with a BROWSER that follows
   the authorization server's redirect to our callback (the pre-registered client of MCP_CONFORMANCE_CONTEXT,
   if the scenario gives one);
3. MCP through `chctl bridge conf` (tests/conformance/driver.py): initialize, tools/list, call each tool;
   a call refused with a hint that says to run `chctl auth conf` is tried again after that login.
Every process it starts, it stops. Exit 0 when every step worked.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo's `tests` package

from mcp.client.stdio import StdioServerParameters  # noqa: E402

from tests.conformance.driver import exercise, log  # noqa: E402
from tests.support.daemon import DaemonProcess  # noqa: E402
from tests.support.env import UserEnv, make_user_env  # noqa: E402

NAME = "conf"
# The Client ID Metadata Document URL the suite's authorization servers expect (its reference client's).
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
BROWSER = Path(__file__).resolve().parent / "browser.py"


def chctl(
    env: UserEnv, *args: str, stdin: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "context_harness.client.chctl", *args],
        env={**_vars(env), **(extra_env or {})},
        cwd=env.project,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log(f"chctl {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}".rstrip())
    return done


def _vars(env: UserEnv) -> dict[str, str]:
    return {
        **env.vars(),
        "CH_NO_AUTOSTART": "1",
        "BROWSER": f"{shlex.quote(sys.executable)} {shlex.quote(str(BROWSER))} %s",
    }


def add(env: UserEnv, server_url: str, context: dict[str, object], root: Path) -> bool:
    """`chctl add conf`, with the login without a person the scenario's context describes, if any."""
    args = ["add", NAME, "--url", server_url, "--bridge"]
    secret = context.get("client_secret")
    extra = {f"{NAME.upper()}_CLIENT_SECRET": secret} if isinstance(secret, str) else {}
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if isinstance(context.get("idp_issuer"), str):
        idp = [
            "idp",
            "add",
            "corp",
            "--issuer",
            str(context["idp_issuer"]),
            "--client-id",
            str(context["idp_client_id"]),
        ]
        login = ["idp", "login", "corp", "--id-token", "-"]
        if chctl(env, *idp).returncode or chctl(env, *login, stdin=str(context["idp_id_token"])).returncode:
            return False
        args += ["--idp", "corp", "--client-id", str(context["client_id"])]
    elif isinstance(context.get("private_key_pem"), str):
        key = root / "client-key.pem"
        key.touch(mode=0o600)
        key.write_text(str(context["private_key_pem"]))
        args += ["--client-credentials", "--client-id", str(context["client_id"]), "--private-key", str(key)]
        args += ["--signing-alg", str(context.get("signing_algorithm") or "ES256")]
    elif scenario.startswith("auth/client-credentials"):
        args += ["--client-credentials", "--client-id", str(context["client_id"])]
    return chctl(env, *args, extra_env=extra).returncode == 0


def log_in(env: UserEnv, context: dict[str, object]) -> bool:
    args = ["auth", NAME, "--timeout", "20"]
    secret = None
    if isinstance(context.get("client_id"), str):
        args += ["--client-id", str(context["client_id"])]
        if isinstance(context.get("client_secret"), str):
            args += ["--client-secret", "-"]
            secret = str(context["client_secret"])
    return chctl(env, *args, stdin=secret).returncode == 0


async def run(server_url: str, context: dict[str, object]) -> int:
    with tempfile.TemporaryDirectory(prefix="chconf-") as root:
        env = make_user_env(Path(root))
        daemon = DaemonProcess(env, extra_env={"CH_CLIENT_METADATA_URL": CLIENT_METADATA_URL}).start()
        try:
            if chctl(env, "init").returncode != 0 or not add(env, server_url, context, Path(root)):
                return 1
            checked = chctl(env, "check", NAME, "--json")
            probes = json.loads(checked.stdout or "[]")
            if probes and probes[0].get("outcome") == "unauthorized" and not log_in(env, context):
                return 1

            async def fix(message: str) -> bool:
                return f"`chctl auth {NAME}`" in message and log_in(env, context)

            bridge = StdioServerParameters(
                command=sys.executable,
                args=["-m", "context_harness.client.chctl", "bridge", NAME],
                env=_vars(env),
                cwd=str(env.project),
            )
            return await exercise(bridge, fix)
        finally:
            daemon.stop()
            sys.stderr.write(_daemon_log_tail(daemon))


def _daemon_log_tail(daemon: DaemonProcess, lines: int = 40) -> str:
    """The end of the daemon's log, for the suite's report of a failed scenario."""
    tail = daemon.log().splitlines()[-lines:]
    return "".join(f"daemon: {line}\n" for line in tail)


def main() -> int:
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    log(f"scenario {os.environ.get('MCP_CONFORMANCE_SCENARIO')}")
    return asyncio.run(run(sys.argv[-1], context))


if __name__ == "__main__":
    sys.exit(main())
