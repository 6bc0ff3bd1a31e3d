// Runs `wrangler dev` (local mode, offline) on the Worker beside this file and speaks the peer protocol of
// tests/peers/peer_process.py: one JSON ready line on stdout once the Worker answers, exit when stdin closes.
// Wrangler's own output goes to stderr (the peer's log file).
//
// Environment: CF_PEER_CONFIG (the wrangler.json to use), CF_PEER_PORT, CF_PEER_INSPECTOR_PORT,
// CF_PEER_PERSIST (the directory KV state lives in: a restart on the same one keeps every grant),
// CF_PEER_READY_TIMEOUT_S.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const wrangler = fileURLToPath(new URL("../node_modules/wrangler/bin/wrangler.js", import.meta.url));
const port = Number(process.env.CF_PEER_PORT);
const origin = `http://127.0.0.1:${port}`;
const readyTimeoutMs = Number(process.env.CF_PEER_READY_TIMEOUT_S ?? "90") * 1000;
const started = Date.now();

const child = spawn(
  process.execPath,
  [
    wrangler, "dev",
    "--config", process.env.CF_PEER_CONFIG,
    "--ip", "127.0.0.1",
    "--port", String(port),
    "--inspector-ip", "127.0.0.1",
    "--inspector-port", process.env.CF_PEER_INSPECTOR_PORT,
    "--persist-to", process.env.CF_PEER_PERSIST,
    "--local",
    "--show-interactive-dev-session=false",
    "--log-level", "info",
  ],
  // Its own process group, so stopping it also stops the workerd processes it starts.
  { stdio: ["ignore", process.stderr, process.stderr], detached: true },
);

const GROUP_GRACE_MS = 3000; // tests/peers/peer_process.py escalates after 5 s: be done before that

function groupAlive() {
  try {
    process.kill(-child.pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {}
}

// SIGTERM to wrangler and its workerd processes, then SIGKILL whatever is left after the grace period.
let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  signalGroup("SIGTERM");
  const deadline = Date.now() + GROUP_GRACE_MS;
  while (groupAlive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  signalGroup("SIGKILL");
  process.exit(code);
}

child.once("exit", (code, signal) => {
  if (!stopping) {
    console.error(`wrangler dev exited (${code ?? signal}) before it was stopped`);
    process.exit(1);
  }
});
process.stdin.on("data", () => {});
process.stdin.on("end", () => stop(0));
process.stdin.on("error", () => stop(0));
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => stop(0));

// Ready: the Worker itself answers (the metadata document comes from workers-oauth-provider, through workerd).
async function poll() {
  while (Date.now() - started < readyTimeoutMs) {
    try {
      const response = await fetch(`${origin}/.well-known/oauth-authorization-server`);
      if (response.status === 200) {
        const metadata = await response.json();
        const startup_s = (Date.now() - started) / 1000;
        process.stdout.write(JSON.stringify({ issuer: metadata.issuer, port, startup_s }) + "\n");
        return;
      }
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  console.error(`the Worker did not answer within ${readyTimeoutMs / 1000} s`);
  stop(1);
}
poll();
