// A certified OpenID provider (panva's oidc-provider, its development login and consent pages)
// for tokenkit's sign-in checks. `npm ci` here first (.ci/run does).
// Usage: node provider.mjs <redirect_uri> <post_logout_redirect_uri>
// Prints "issuer <url>" once listening on 127.0.0.1 (a free port). Any login and password sign
// in; the account's name is its login. Access and ID tokens live 120 s, refresh tokens an hour.
import Provider from 'oidc-provider';
import http from 'node:http';

const [redirectUri, postLogout] = process.argv.slice(2);
const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'web-app',
      client_secret: 'web-secret',
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogout],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true }, revocation: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    issueRefreshToken: async () => true,
    claims: { openid: ['sub'], profile: ['name'] },
    // The profile scope's claims go into the ID token too (as Keycloak and Auth0 do), not only
    // to the UserInfo endpoint.
    conformIdTokenClaims: false,
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub, name: sub }) }),
    ttl: { AccessToken: 120, IdToken: 120, RefreshToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});
