// A real OAuth 2.1 / OIDC authorization server for the test suite: oidc-provider 9.13,
// configured the way an MCP deployment would configure it.
//
// Usage:  node tests/peers/oidc_server.mjs ['<config JSON>']
//         (or the same JSON in the OIDC_PEER_CONFIG environment variable; argv wins).
// Secrets (the confidential client's secret) belong in the environment variable, not argv,
// so they do not show in process listings.
//
// When listening it prints exactly one line to stdout:
//     {"issuer": "http://127.0.0.1:<port>", "port": <port>}
// It exits when stdin closes (so it never outlives the test process that started it) or on
// SIGTERM/SIGINT.
//
// Config keys (all optional):
//   port                  0 = random free port (default 0)
//   accessTokenTTL        seconds (default 3600)
//   refreshTokenTTL       seconds (default 14 days)
//   rotateRefreshToken    true: every refresh consumes the presented refresh token and issues a new
//                         one; presenting a consumed one again is invalid_grant AND revokes the whole
//                         grant (reuse detection, RFC 9700). false: the same refresh token is kept.
//                         (default true)
//   alwaysIssueRefreshToken  true: a refresh token for every code grant of a client allowed the
//                         refresh_token grant, offline_access or not. false: only when offline_access
//                         was requested and granted (default false).
//   offlineAccessNeedsPromptConsent
//                         stock oidc-provider drops offline_access from any authorization request
//                         without prompt=consent (so no refresh token). false (default): a request
//                         with offline_access and no prompt gets prompt=consent added, so clients get
//                         refresh tokens for offline_access alone, as from most MCP servers.
//                         true: the stock behaviour.
//   resourcePrefix        a resource indicator (RFC 8707) is accepted when it starts with this
//                         (default "http://127.0.0.1:"), so MCP servers on random ports need no
//                         registration here. The access token's audience is the resource itself.
//   resources             optional exact list; when given, only these resources are accepted.
//   resourceScopes        scopes an MCP resource accepts (default ["mcp:read", "mcp:write"])
//   scopes                scopes the server knows (default openid offline_access + resourceScopes);
//                         registration rejects any other scope.
//   publicClientId        the pre-registered public native client (default "ch-native-client"):
//                         token_endpoint_auth_method none, redirect http://127.0.0.1/callback at any port.
//   introspectionClientId / introspectionClientSecret
//                         the confidential client MCP resource servers introspect with
//                         (default "mcp-resource-server" / a random secret, then useless: pass one).
//   extraClients          more client metadata objects to pre-register.
//   registration          open dynamic client registration (default true, no initial access token).
//   strictClientAuthMethod  true: /token and /token/revocation refuse (401 invalid_client) a client of
//                         extraClients that sends its secret another way than its token_endpoint_auth_method
//                         says, as FastMCP does (stock oidc-provider takes Basic and the form alike).
//                         (default false)
//   tlsCert / tlsKey      PEM files: serve HTTPS with them, and the issuer is https://127.0.0.1:<port>.
//   clientCredentials     true: the client credentials grant (SEP-1046) for clients that list it (default false).
//   idTokenTTL            seconds an ID token lasts (default 3600).
//   registrationManagement  true: RFC 7592 for dynamically registered clients (DELETE /reg/<id> with the
//                         registration access token removes the client: its secret is revoked). Default false.
//   tokenExchange         true: this provider is also a company identity provider for enterprise-managed
//                         authorization (SEP-990): an RFC 8693 token exchange of one of its own ID tokens
//                         (subject_token_type id_token, requested_token_type id-jag, audience, resource) for an
//                         ID-JAG signed with its key (header typ oauth-id-jag+jwt; claims iss, sub, aud = the
//                         audience, resource, client_id, jti, iat, exp), through oidc-provider's extension point
//                         registerGrantType. The ID token must be of the requesting client, signed here, unexpired.
//   idJagClientId         the `client_id` the ID-JAG names (the MCP client's id at the MCP authorization server;
//                         an IdP is told it out of band, SEP-990 §6.1). Default: the requesting client's id.
//   issuerHost            the host in the issuer (default 127.0.0.1), e.g. a name the tests map to
//                         127.0.0.1 (tests/peers/mapped_hosts.py) so that a client's traffic goes through a proxy.
//
// Access tokens are opaque (resource servers must introspect). PKCE is required for every client,
// S256 only. Authorization responses carry `iss` (RFC 9207; oidc-provider adds it to every query/
// fragment response without an id_token). Login and consent are oidc-provider's dev interaction
// pages: any login name and password are accepted.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import { SignJWT } from 'jose';
import Provider, { errors } from 'oidc-provider';

function readConfig() {
  const raw = process.argv[2] ?? process.env.OIDC_PEER_CONFIG ?? '{}';
  return JSON.parse(raw);
}

const config = readConfig();
const resourceScopes = config.resourceScopes ?? ['mcp:read', 'mcp:write'];
const settings = {
  port: config.port ?? 0,
  accessTokenTTL: config.accessTokenTTL ?? 3600,
  refreshTokenTTL: config.refreshTokenTTL ?? 14 * 24 * 60 * 60,
  rotateRefreshToken: config.rotateRefreshToken ?? true,
  alwaysIssueRefreshToken: config.alwaysIssueRefreshToken ?? false,
  resourcePrefix: config.resourcePrefix ?? 'http://127.0.0.1:',
  resources: config.resources ?? null,
  scopes: config.scopes ?? ['openid', 'offline_access', ...resourceScopes],
  publicClientId: config.publicClientId ?? 'ch-native-client',
  introspectionClientId: config.introspectionClientId ?? 'mcp-resource-server',
  introspectionClientSecret: config.introspectionClientSecret ?? crypto.randomBytes(32).toString('base64url'),
  extraClients: config.extraClients ?? [],
  registration: config.registration ?? true,
  offlineAccessNeedsPromptConsent: config.offlineAccessNeedsPromptConsent ?? false,
  strictClientAuthMethod: config.strictClientAuthMethod ?? false,
  tokenDelayMs: config.tokenDelayMs ?? 0,
  clientCredentials: config.clientCredentials ?? false,
  idTokenTTL: config.idTokenTTL ?? 3600,
  registrationManagement: config.registrationManagement ?? false,
  tokenExchange: config.tokenExchange ?? false,
  idJagClientId: config.idJagClientId ?? null,
};
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const ID_JAG_TYPE = 'urn:ietf:params:oauth:token-type:id-jag';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

function resourceAccepted(indicator) {
  if (settings.resources) return settings.resources.includes(indicator);
  return typeof indicator === 'string' && indicator.startsWith(settings.resourcePrefix);
}

// A fresh RS256 key per process instead of oidc-provider's shared development keys; it signs ID-JAGs too.
const { privateKey: signingKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

function signingKeys() {
  return { keys: [{ ...signingKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'peer-rs256' }] };
}

function providerConfiguration() {
  return {
    clients: [
      {
        client_id: settings.publicClientId,
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
      {
        client_id: settings.introspectionClientId,
        client_secret: settings.introspectionClientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        redirect_uris: [],
        grant_types: [],
        response_types: [],
      },
      ...settings.extraClients,
    ],
    scopes: settings.scopes,
    claims: { openid: ['sub'] },
    jwks: signingKeys(),
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: settings.clientCredentials },
      registration: { enabled: settings.registration, initialAccessToken: false },
      registrationManagement: { enabled: settings.registrationManagement },
      introspection: {
        enabled: true,
        // Confidential clients (resource servers) may introspect any token; public clients only their own.
        allowedPolicy: (ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: (ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf,
        // A refresh without `resource` keeps the audience the grant was made for, as MCP clients expect.
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          if (!resourceAccepted(indicator)) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: resourceScopes.join(' '),
            audience: indicator,
            accessTokenTTL: settings.accessTokenTTL,
            accessTokenFormat: 'opaque',
          };
        },
      },
    },
    issueRefreshToken: (ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && (settings.alwaysIssueRefreshToken || code.scopes.has('offline_access')),
    rotateRefreshToken: settings.rotateRefreshToken,
    ttl: {
      AccessToken: () => settings.accessTokenTTL,
      RefreshToken: () => settings.refreshTokenTTL,
      Grant: () => Math.max(settings.refreshTokenTTL, 14 * 24 * 60 * 60),
      Session: () => 14 * 24 * 60 * 60,
      IdToken: () => settings.idTokenTTL,
      Interaction: () => 60 * 60,
    },
  };
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

// Bind first: the issuer must carry the real port, and port 0 is only resolved by binding.
const tls = config.tlsCert && config.tlsKey
  ? { cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey) } : null;
const server = tls ? https.createServer(tls) : http.createServer();
const port = await listen(server, settings.port);
const issuer = `${tls ? 'https' : 'http'}://${config.issuerHost ?? '127.0.0.1'}:${port}`;
const provider = new Provider(issuer, providerConfiguration());
if (!settings.offlineAccessNeedsPromptConsent) {
  provider.use(async (ctx, next) => {
    // The user is shown the consent page either way (a fresh grant always needs consent); this
    // only stops oidc-provider from silently dropping offline_access when prompt is absent.
    const { query } = ctx;
    if (ctx.path === '/auth' && ctx.method === 'GET' && !query.prompt
        && typeof query.scope === 'string' && query.scope.split(' ').includes('offline_access')) {
      ctx.query = { ...query, prompt: 'consent' };
    }
    await next();
  });
}
if (settings.strictClientAuthMethod) {
  const registeredMethod = new Map(settings.extraClients.map((c) => [c.client_id, c.token_endpoint_auth_method]));
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ['/token', '/token/revocation'].includes(ctx.path)) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      // oidc-provider parses an already-read body from here (lib/shared/selective_body.js).
      ctx.request.body = Buffer.concat(chunks).toString();
      const form = new URLSearchParams(ctx.request.body);
      const header = ctx.get('authorization');
      let clientId = form.get('client_id');
      let used = form.has('client_secret') ? 'client_secret_post' : 'none';
      if (header.startsWith('Basic ')) {
        used = 'client_secret_basic';
        clientId = decodeURIComponent(Buffer.from(header.slice(6), 'base64').toString().split(':')[0]);
      }
      const registered = registeredMethod.get(clientId);
      if (registered && registered !== used) {
        console.error('strict_client_auth_refused', ctx.path, used);
        ctx.status = 401;
        ctx.body = { error: 'invalid_client', error_description: `this client authenticates with ${registered}` };
        return;
      }
    }
    await next();
  });
}
if (settings.tokenDelayMs > 0) {
  // A slow token endpoint: a refresh stays in flight long enough for concurrent callers to
  // arrive during it (the single-flight tests).
  provider.use(async (ctx, next) => {
    if (ctx.path === '/token' && ctx.method === 'POST') {
      await new Promise((resolve) => { setTimeout(resolve, settings.tokenDelayMs); });
    }
    await next();
  });
}
if (settings.tokenExchange) {
  // RFC 8693 at the identity provider (SEP-990 §4): one of our own ID tokens in, an ID-JAG out.
  provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
    const { params, client } = ctx.oidc;
    if (params.subject_token_type !== ID_TOKEN_TYPE || params.requested_token_type !== ID_JAG_TYPE) {
      throw new errors.InvalidRequest('subject_token_type id_token and requested_token_type id-jag are required');
    }
    if (!params.subject_token || !params.audience || !params.resource) {
      throw new errors.InvalidRequest('subject_token, audience and resource are required');
    }
    let payload;
    try {
      ({ payload } = await provider.IdToken.validate(params.subject_token, client));
    } catch {
      throw new errors.InvalidGrant('the subject token is not an ID token this provider issued to this client');
    }
    const now = Math.floor(Date.now() / 1000);
    if (payload.exp <= now) {
      throw new errors.InvalidGrant('the ID token has expired');
    }
    const claims = { sub: payload.sub, resource: params.resource, client_id: settings.idJagClientId ?? client.clientId };
    if (params.scope) claims.scope = params.scope;
    const idJag = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'peer-rs256', typ: 'oauth-id-jag+jwt' })
      .setIssuer(issuer).setAudience(params.audience).setIssuedAt(now).setExpirationTime(now + 300)
      .setJti(crypto.randomUUID())
      .sign(signingKey);
    console.error('token_exchange_granted', params.audience);
    ctx.body = { access_token: idJag, issued_token_type: ID_JAG_TYPE, token_type: 'N_A', expires_in: 300 };
  }, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);
}
// Outcomes go to stderr (the fixture's log file) for debugging; error codes only, never token values.
provider.on('server_error', (ctx, error) => console.error('server_error', ctx.path, error));
for (const event of ['authorization.error', 'grant.error', 'introspection.error', 'revocation.error',
  'registration_create.error']) {
  provider.on(event, (ctx, error) => console.error(event, error.error, error.error_description ?? ''));
}
server.on('request', provider.callback());

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
