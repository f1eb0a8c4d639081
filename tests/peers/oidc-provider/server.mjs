// Lockstep's oidc-provider peer: panva's OpenID Certified provider with the
// configuration `lab certify idp` is tested against. Started by the tests
// (tests/it/peers.rs); see ../README.md.
//
// Environment:
//   PORT            port to listen on (required)
//   HOST            address to bind (default 127.0.0.1)
//   ISSUER          issuer identifier (default http://localhost:$PORT)
//   CLIENT_ID       confidential client (default lab-gateway)
//   CLIENT_SECRET   its secret (default lab-gateway-secret)
//   REDIRECT_URI    its redirect URI (required)
//   POST_LOGOUT_REDIRECT_URI  (default: the redirect URI's origin + /logged-out)
//
// Nothing is tuned to pass a check: apart from the client, PKCE being
// required for every client and the lifetimes below, this is the library's
// own behaviour (dev interactions for login and consent, its logout
// confirmation page, refresh tokens only for `offline_access` requested with
// `prompt=consent`, as its default `issueRefreshToken` and consent policy do).
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const need = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
};

const port = Number(need('PORT'));
const host = process.env.HOST || '127.0.0.1';
const issuer = process.env.ISSUER || `http://localhost:${port}`;
const clientId = process.env.CLIENT_ID || 'lab-gateway';
const clientSecret = process.env.CLIENT_SECRET || 'lab-gateway-secret';
const redirectUri = need('REDIRECT_URI');
const postLogout = process.env.POST_LOGOUT_REDIRECT_URI || `${new URL(redirectUri).origin}/logged-out`;

// A fresh RS256 signing key per start, kept in memory only.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

// Dev interactions accept any login name: each becomes an account.
function account(id) {
  return {
    accountId: id,
    async claims(_use, _scope) {
      return { sub: id, email: `${id}@lab.test`, email_verified: true, name: id };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogout],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(_ctx, id) {
    return account(id);
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    RefreshToken: 86400,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
});
provider.proxy = false;
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(port, host, () => {
  console.log(`oidc-provider ${issuer} listening on ${host}:${port} (pid ${process.pid})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
