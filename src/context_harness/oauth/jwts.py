"""The JWTs of the logins without a person: the client's signed assertion (`private_key_jwt`, RFC 7523 §2.2) and
the claims of an ID token (OpenID Connect Core §2). PyJWT does the JOSE work (signing, parsing); these are pure
functions over it.

The ID token's signature is not checked here: the identity provider checks it at every token exchange (it is the
one the token goes back to), and one from its token endpoint came over TLS (OIDC Core §3.1.3.7). What is checked
is what tells us whose it is and how long it lasts: `iss`, `aud`, `exp`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from context_harness.oauth.discovery import issuers_match
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import printable

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SIGNING_ALGS = ("ES256", "RS256")
# An assertion is good for this long: one request's worth (RFC 7523 §3 wants a short expiry; the MCP SDKs use 300 s,
# which allows for clock skew between us and the authorization server).
ASSERTION_LIFETIME_S = 300
# A key larger than this is no PEM private key we can use: refuse it before parsing it.
MAX_KEY_BYTES = 64 * 1024
MIN_RSA_BITS = 2048


def key_problem(pem: str, alg: str) -> str | None:
    """Why `pem` cannot sign `alg` assertions (never quoting the key); None when it can."""
    if alg not in SIGNING_ALGS:
        return f"the signing algorithm {alg!r} is not one of {', '.join(SIGNING_ALGS)}"
    if len(pem) > MAX_KEY_BYTES:
        return "the key file is too large to be a PEM private key"
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        return "the key file is encrypted: give an unencrypted PEM key (chctl stores it 0600)"
    except (ValueError, UnicodeError):
        return "the key file is not a PEM private key"
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            return "ES256 needs an EC key on the P-256 curve"
    elif not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_BITS:
        return f"RS256 needs an RSA key of at least {MIN_RSA_BITS} bits"
    return None


def client_assertion(client_id: str, audience: str, pem: str, alg: str, now: float | None = None) -> str:
    """A `private_key_jwt` client assertion: `iss` and `sub` the client id, `aud` the authorization server, a fresh
    `jti` and a short `exp`. The key was checked with `key_problem` when it was stored."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    return jwt.encode(claims, pem, algorithm=alg)


@dataclass(frozen=True, slots=True)
class IdTokenClaims:
    subject: str
    issued_at: float
    expires_at: float


def id_token_claims(token: str, issuer: str, client_id: str, now: float | None = None) -> Result[IdTokenClaims]:
    """The claims of an ID token from `issuer` for `client_id`, unexpired; a Failure says which check failed."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return Failure("the ID token is not a JWT", ErrorCode.INVALID_PARAMS, "give the ID token itself, on stdin")
    iss, aud, exp, sub = claims.get("iss"), claims.get("aud"), claims.get("exp"), claims.get("sub")
    if not isinstance(iss, str) or not issuers_match(iss, issuer):
        shown = printable(str(iss), 200, ascii_only=True)
        return Failure(f"the ID token was issued by {shown!r}, not {issuer!r}", ErrorCode.INVALID_PARAMS)
    audiences = aud if isinstance(aud, list) else [aud]
    if client_id not in audiences:
        return Failure(f"the ID token is not for the client {client_id!r}", ErrorCode.INVALID_PARAMS)
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= (time.time() if now is None else now):
        return Failure("the ID token has expired (or says no expiry)", ErrorCode.TOKEN_EXPIRED, "sign in again")
    iat = claims.get("iat")
    issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else time.time()
    return Success(IdTokenClaims(str(sub) if sub is not None else "", issued, float(exp)))
