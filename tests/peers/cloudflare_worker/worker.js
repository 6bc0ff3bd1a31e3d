// A Worker as Cloudflare's own MCP servers are built: @cloudflare/workers-oauth-provider issues and checks
// `userId:grantId:secret` tokens, /mcp is the protected MCP endpoint, and /authorize approves at once for one
// fixed user, so a headless browser that just follows redirects logs in. wrangler.json (written by
// tests/peers/workers_oauth.py) supplies RESOURCE (this Worker's own /mcp URL) and ACCESS_TOKEN_TTL.
import { OAuthProvider } from "@cloudflare/workers-oauth-provider";

const USER_ID = "alice";
const TOOLS = [
  {
    name: "whoami",
    description: "The user the access token was issued for.",
    inputSchema: { type: "object", properties: {} },
  },
];

function result(id, value) {
  return Response.json({ jsonrpc: "2.0", id, result: value });
}

function error(id, code, message) {
  return Response.json({ jsonrpc: "2.0", id, error: { code, message } });
}

// Streamable HTTP in its JSON form: every request is answered with one JSON body, nothing is streamed, no session.
const mcpHandler = {
  async fetch(request, env, ctx) {
    if (request.method !== "POST") {
      return new Response(null, { status: 405, headers: { Allow: "POST" } });
    }
    let message;
    try {
      message = await request.json();
    } catch {
      return error(null, -32700, "parse error");
    }
    if (message.id === undefined) {
      return new Response(null, { status: 202 }); // a notification
    }
    switch (message.method) {
      case "initialize":
        return result(message.id, {
          protocolVersion: message.params?.protocolVersion ?? "2025-06-18",
          capabilities: { tools: {} },
          serverInfo: { name: "workers-oauth-provider-peer", version: "1.0.0" },
        });
      case "ping":
        return result(message.id, {});
      case "tools/list":
        return result(message.id, { tools: TOOLS });
      case "tools/call":
        if (message.params?.name === "whoami") {
          return result(message.id, { content: [{ type: "text", text: ctx.props.userId }] });
        }
        return error(message.id, -32602, "unknown tool");
      default:
        return error(message.id, -32601, "method not found");
    }
  },
};

// The consent page a person would see, approved at once: the grant carries the scopes the client asked for.
// Two routes for the tests, as an operator's console would be: POST /peer/next-user sets the user id of the
// next login only (a test asks for a user id its client must refuse), GET /peer/grants?user=ID counts the
// grants that user still has.
const NEXT_USER_KEY = "peer:next-user"; // beside the library's own client:/grant:/token: keys

const defaultHandler = {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/peer/next-user" && request.method === "POST") {
      await env.OAUTH_KV.put(NEXT_USER_KEY, await request.text());
      return new Response(null, { status: 204 });
    }
    if (url.pathname === "/peer/grants") {
      const grants = await env.OAUTH_PROVIDER.listUserGrants(url.searchParams.get("user"));
      return Response.json({ count: grants.items.length });
    }
    if (url.pathname !== "/authorize") {
      return new Response("not found", { status: 404 });
    }
    const authRequest = await env.OAUTH_PROVIDER.parseAuthRequest(request);
    const userId = (await env.OAUTH_KV.get(NEXT_USER_KEY)) ?? USER_ID;
    await env.OAUTH_KV.delete(NEXT_USER_KEY);
    const { redirectTo } = await env.OAUTH_PROVIDER.completeAuthorization({
      request: authRequest,
      userId,
      metadata: {},
      scope: authRequest.scope,
      props: { userId },
    });
    return Response.redirect(redirectTo, 302);
  },
};

// The provider needs its resource URL when it is built; the environment is only known at the first request.
let provider;

export default {
  fetch(request, env, ctx) {
    provider ??= new OAuthProvider({
      apiRoute: "/mcp",
      apiHandler: mcpHandler,
      defaultHandler,
      authorizeEndpoint: "/authorize",
      tokenEndpoint: "/token",
      clientRegistrationEndpoint: "/register",
      accessTokenTTL: Number(env.ACCESS_TOKEN_TTL),
      scopesSupported: ["mcp:read", "offline_access"],
      resourceMetadata: {
        resource: env.RESOURCE,
        authorization_servers: [new URL(env.RESOURCE).origin],
      },
      requiredScopes: ["mcp:read"],
    });
    return provider.fetch(request, env, ctx);
  },
};
