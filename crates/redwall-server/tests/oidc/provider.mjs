// A real OpenID provider (the certified `oidc-provider` package) for the
// OIDC tests. Usage: node provider.mjs '<json>' with
//   { module, issuer, port, alg: "RS256"|"ES256", redirect_uris,
//     post_logout_redirect_uris, id_token_ttl, claims_in_id_token }
// It prints "listening" once it accepts connections.
//
// Two clients: "redwall" (the one under test, signing with `alg`) and
// "other" (same secret; its tokens are the wrong audience for Redwall).
// Users log in through the package's development login form: the login
// name is the account, any password is accepted.
import { generateKeyPairSync } from 'node:crypto';

const cfg = JSON.parse(process.argv[2]);
const { default: Provider } = await import(cfg.module);

const accounts = {
  alice: { preferred_username: 'alice', name: 'Alice', groups: ['nr-editors'] },
  bob: { preferred_username: 'bob', name: 'Bob', groups: [] },
  // Not a valid Redwall username.
  mallory: { preferred_username: 'Mallory The Great!', name: 'Mallory', groups: [] },
  // Names groups she may have chosen herself: a directory group's DN in
  // other case and spacing, and a team group with a trailing space.
  eve: {
    preferred_username: 'eve',
    name: 'Eve',
    groups: [
      'CN=NR-ADMINS, OU=GROUPS,DC=EXAMPLE,DC=ORG',
      ' cn=nr-admins,ou=groups,dc=example,dc=org ',
      'NR-Editors ',
    ],
  },
};

const privateJwk = (type, opts, alg, kid) => ({
  ...generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' }),
  alg,
  use: 'sig',
  kid,
});
const jwks = {
  keys: [
    privateJwk('rsa', { modulusLength: 2048 }, 'RS256', 'rsa-1'),
    privateJwk('ec', { namedCurve: 'P-256' }, 'ES256', 'ec-1'),
  ],
};

const client = (client_id) => ({
  client_id,
  client_secret: 'redwall-test-secret',
  redirect_uris: cfg.redirect_uris,
  post_logout_redirect_uris: cfg.post_logout_redirect_uris ?? [],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: cfg.alg,
});

const provider = new Provider(cfg.issuer, {
  clients: [client('redwall'), client('other')],
  jwks,
  cookies: { keys: ['redwall-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'groups', 'offline_access'],
  // Off: the scopes' claims go into the ID token too, not only UserInfo.
  conformIdTokenClaims: !cfg.claims_in_id_token,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true, methods: ['S256'] },
  ttl: {
    IdToken: cfg.id_token_ttl ?? 3600,
    AccessToken: 3600,
    AuthorizationCode: 600,
    Interaction: 3600,
    Session: 3600,
    Grant: 3600,
  },
  async findAccount(ctx, id) {
    const a = accounts[id];
    if (!a) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...a }; } };
  },
});
// Quiet: the tests read the provider's answers, not its warnings.
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(cfg.port, '127.0.0.1', () => console.log('listening'));
