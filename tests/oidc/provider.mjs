// A real OpenID Connect provider for the portal's single sign-on tests: panva's
// OpenID-certified oidc-provider, listening on 127.0.0.1 only.
//
// Environment:
//   OIDC_PORT           port to listen on (127.0.0.1)
//   OIDC_CLIENT_ID      the portal's client id
//   OIDC_CLIENT_SECRET  the portal's client secret
//   OIDC_REDIRECT_URIS  the portal's callback URL(s), comma-separated
//   OIDC_USERS_FILE     JSON: {"login": {"password", "email", "name", "groups": [..],
//                       "amr": [..]}}, read again at every sign-in and token, so a test
//                       changes a person's groups (or removes the person) between sign-ins
//   OIDC_FAULT_FILE     optional; its content (one word) spoils the next ID tokens the
//                       token endpoint returns: "wrong_audience" and "expired" are signed
//                       properly with the provider's key, "tampered" has a payload that
//                       no longer matches its signature. Empty or missing: no fault.
import crypto from 'node:crypto';
import fs from 'node:fs';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const usersFile = process.env.OIDC_USERS_FILE;
const faultFile = process.env.OIDC_FAULT_FILE || '';

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };

function users() {
  return JSON.parse(fs.readFileSync(usersFile, 'utf8'));
}

function fault() {
  try {
    return fs.readFileSync(faultFile, 'utf8').trim();
  } catch {
    return '';
  }
}

const configuration = {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: process.env.OIDC_REDIRECT_URIS.split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub', 'amr', 'acr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Groups in the ID token as well as from userinfo, as Okta and Keycloak can be set to do.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => false },
  async findAccount(ctx, id) {
    const person = users()[id];
    if (!person) return undefined; // no longer known: no token, no userinfo
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: person.email,
          email_verified: true,
          name: person.name || id,
          preferred_username: id,
          groups: person.groups || [],
        };
      },
    };
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Provider error</title><h1>Provider error</h1><p>${escape(out.error)}: ${escape(out.error_description || '')}</p>`;
  },
};

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, error) {
  return `<!doctype html><html lang="en"><head><title>Test provider: sign in</title></head><body>
<h1>Test identity provider</h1>
${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label>Login <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in at the provider</button>
</form></body></html>`;
}

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const b64 = (value) => Buffer.from(value).toString('base64url');

function spoil(idToken, kind) {
  const [header, payload, signature] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  const now = Math.floor(Date.now() / 1000);
  if (kind === 'tampered') {
    claims.sub = 'someone-else';
    return `${header}.${b64(JSON.stringify(claims))}.${signature}`;
  }
  if (kind === 'wrong_audience') claims.aud = 'another-application';
  else if (kind === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  else return idToken;
  const body = `${header}.${b64(JSON.stringify(claims))}`;
  const sig = crypto.sign('sha256', Buffer.from(body), privateKey);
  return `${body}.${sig.toString('base64url')}`;
}

const provider = new Provider(issuer, configuration);

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) {
    await next();
    if (ctx.path === '/token' && ctx.body && ctx.body.id_token && fault()) {
      ctx.body = { ...ctx.body, id_token: spoil(ctx.body.id_token, fault()) };
    }
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const uid = match[1];
  if (details.prompt.name === 'login') {
    if (ctx.method === 'POST' && match[2]) {
      const form = await formBody(ctx.req);
      const login = form.get('login') || '';
      const person = users()[login];
      if (!person || person.password !== form.get('password')) {
        ctx.type = 'html';
        ctx.body = loginPage(uid, 'Unknown login or wrong password.');
        return;
      }
      const result = { login: { accountId: login, amr: person.amr || ['pwd'], remember: false } };
      await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return;
    }
    ctx.type = 'html';
    ctx.body = loginPage(uid, '');
    return;
  }
  // Consent: the portal is this provider's only client, so everything it asks is granted.
  const { prompt, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const grantId = await grant.save();
  await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  ctx.respond = false;
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
