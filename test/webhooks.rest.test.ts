import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';

const SEED_WEBHOOK = {
  Name: 'MyTestWebhook',
  Description: 'Send messages whenever changes in table MyCustomers occur',
  OutgoingUrls: ['https://www.test.com/89lnuuy6999ss', 'https://www.test.com/79hjy76788hbk'],
  CallThrottling: 8,
};

const API_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$/;

let gw: TestGateway;
let token: string;
let readOnlyToken: string;
let counter = 0;

/** A valid webhook body with a unique name and URL, so tests do not collide. */
function uniqueWebhook(overrides: Record<string, unknown> = {}) {
  counter++;
  return { Name: `hook-${counter}`, OutgoingUrls: [`https://hooks.example.com/${counter}`], ...overrides };
}

beforeAll(async () => {
  gw = await startTestGateway({ MULTICAST_MAX_URLS: '3', CALL_THROTTLING_MAX: '50' });
  token = await gw.token({ name: 'John Doe', email: 'john.doe@acme.com' });
  readOnlyToken = await gw.token({ readOnly: true, name: 'Reader', email: 'reader@acme.com' });
});

afterAll(() => gw?.stop());

describe.each(['/v2', '/rest/v2', '/integrations/rest/v3'])('the seed example under %s', (prefix) => {
  it('creates, lists, gets, updates, regenerates the secret of and deletes a webhook', async () => {
    const name = `${SEED_WEBHOOK.Name}${prefix.replaceAll('/', '_')}`;
    const urls = SEED_WEBHOOK.OutgoingUrls.map((url) => `${url}${prefix.replaceAll('/', '-')}`);
    const created = await gw.request('POST', `${prefix}/outgoingWebhooks`, {
      token,
      body: { ...SEED_WEBHOOK, Name: name, OutgoingUrls: urls },
    });
    expect(created.status).toBe(201);
    const webhook = created.body;
    expect(webhook).toMatchObject({
      Name: name,
      Description: SEED_WEBHOOK.Description,
      OutgoingUrls: urls,
      CallThrottling: 8,
      Enabled: true,
      DefaultPayloadIncludesSecret: false,
      CreatedBy: 'John Doe (john.doe@acme.com)',
      ModifiedBy: 'John Doe (john.doe@acme.com)',
    });
    expect(webhook.Id).toMatch(/^[a-z0-9]{6}$/);
    expect(webhook.Secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(webhook.Secret.slice(6), 'base64').length).toBeGreaterThanOrEqual(24);
    expect(webhook.DateCreated).toMatch(API_DATE);
    expect(webhook.LastModified).toMatch(API_DATE);

    const listed = await gw.request('GET', `${prefix}/outgoingWebhooks`, { token });
    expect(listed.status).toBe(200);
    expect(listed.body.Result).toContainEqual(webhook);

    const fetched = await gw.request('GET', `${prefix}/outgoingWebhooks/${webhook.Id}`, { token });
    expect(fetched.status).toBe(200);
    expect(fetched.body).toMatchObject(webhook);

    const updated = await gw.request('PUT', `${prefix}/outgoingWebhooks/${webhook.Id}`, {
      token,
      body: { CallThrottling: 3, Enabled: false },
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ ...webhook, CallThrottling: 3, Enabled: false, LastModified: expect.any(String) });
    expect(updated.body.Name).toBe(name); // absent fields stay as they were
    expect(updated.body.OutgoingUrls).toEqual(urls);

    const rotated = await gw.request('PATCH', `${prefix}/outgoingWebhooks/${webhook.Id}/regenerateSecret`, { token });
    expect(rotated.status).toBe(200);
    expect(rotated.body.Secret).toMatch(/^whsec_/);
    expect(rotated.body.Secret).not.toBe(webhook.Secret);

    const deleted = await gw.request('DELETE', `${prefix}/outgoingWebhooks/${webhook.Id}`, { token });
    expect(deleted.status).toBe(204);
    expect(deleted.body).toBeUndefined();
    const gone = await gw.request('GET', `${prefix}/outgoingWebhooks/${webhook.Id}`, { token });
    expect(gone.status).toBe(404);
    expect(gone.body.Code).toBe('ObjectNotFound');
  });
});

describe('webhook fields', () => {
  it('defaults CallThrottling to the plan maximum when omitted or 0, and Enabled to true', async () => {
    const omitted = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    expect(omitted.status).toBe(201);
    expect(omitted.body).toMatchObject({ CallThrottling: 50, Enabled: true, Description: '' });
    const zero = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook({ CallThrottling: 0 }) });
    expect(zero.body.CallThrottling).toBe(50);
  });

  it('shows the limit in force after CALL_THROTTLING_MAX is lowered, so that what GET shows can be PUT back', async () => {
    const created = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    expect(created.body.CallThrottling).toBe(50);
    const lowered = await startTestGateway({ CALL_THROTTLING_MAX: '20' }, gw.databaseUrl);
    try {
      const writer = await lowered.token();
      const shown = await lowered.request('GET', `/v2/outgoingWebhooks/${created.body.Id}`, { token: writer });
      expect(shown.body.CallThrottling).toBe(20);
      const { Name, Description, OutgoingUrls, CallThrottling, Enabled } = shown.body;
      const putBack = await lowered.request('PUT', `/v2/outgoingWebhooks/${created.body.Id}`, {
        token: writer,
        body: { Name, Description, OutgoingUrls, CallThrottling, Enabled },
      });
      expect(putBack.status).toBe(200);
      const graphql = await lowered.graphql(`query($id: ID!) { outgoingWebhook(id: $id) { callThrottling } }`, { id: created.body.Id }, writer);
      expect(graphql.body.data.outgoingWebhook.callThrottling).toBe(20);
    } finally {
      await lowered.stop();
    }
  });

  it('replaces the URL list on update and frees the old URLs for other webhooks', async () => {
    const first = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const oldUrl = first.body.OutgoingUrls[0];
    const moved = await gw.request('PUT', `/v2/outgoingWebhooks/${first.body.Id}`, {
      token,
      body: { OutgoingUrls: ['https://hooks.example.com/moved-a', 'https://hooks.example.com/moved-b'] },
    });
    expect(moved.status).toBe(200);
    expect(moved.body.OutgoingUrls).toEqual(['https://hooks.example.com/moved-a', 'https://hooks.example.com/moved-b']);
    const second = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook({ OutgoingUrls: [oldUrl] }) });
    expect(second.status).toBe(201);
  });

  it('keeps its own name and URLs on update without calling them duplicates', async () => {
    const hook = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const same = await gw.request('PUT', `/v2/outgoingWebhooks/${hook.body.Id}`, {
      token,
      body: { Name: hook.body.Name, OutgoingUrls: hook.body.OutgoingUrls },
    });
    expect(same.status).toBe(200);
  });

  it('hides the secret from read-only profiles and shows it to writers', async () => {
    const hook = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const asReader = await gw.request('GET', `/v2/outgoingWebhooks/${hook.body.Id}`, { token: readOnlyToken });
    expect(asReader.status).toBe(200);
    expect(asReader.body).not.toHaveProperty('Secret');
    const list = await gw.request('GET', '/v2/outgoingWebhooks', { token: readOnlyToken });
    expect(list.body.Result.every((webhook: object) => !('Secret' in webhook))).toBe(true);
    const asWriter = await gw.request('GET', `/v2/outgoingWebhooks/${hook.body.Id}`, { token });
    expect(asWriter.body.Secret).toBe(hook.body.Secret);
  });

  it('echoes the id and request id: every response carries x-request-id', async () => {
    const response = await gw.request('GET', '/v2/outgoingWebhooks', { token });
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('bad input gets a 400 naming the field', () => {
  const cases: [string, unknown, string][] = [
    ['missing Name', { OutgoingUrls: ['https://a.example.com/1'] }, 'Name: is required'],
    ['empty Name', { Name: '', OutgoingUrls: ['https://a.example.com/2'] }, 'Name'],
    ['a Name of only spaces', { Name: ' \t\u00a0 ', OutgoingUrls: ['https://a.example.com/2'] }, 'Name: must not be blank'],
    ['Name too long', { Name: 'x'.repeat(256), OutgoingUrls: ['https://a.example.com/3'] }, 'Name'],
    ['Name of the wrong type', { Name: 123, OutgoingUrls: ['https://a.example.com/4'] }, 'Name'],
    ['missing OutgoingUrls', { Name: 'no-urls' }, 'OutgoingUrls: is required'],
    ['empty OutgoingUrls', { Name: 'empty-urls', OutgoingUrls: [] }, 'OutgoingUrls'],
    ['OutgoingUrls not a list', { Name: 'str-urls', OutgoingUrls: 'https://a.example.com' }, 'OutgoingUrls'],
    ['a relative URL', { Name: 'rel', OutgoingUrls: ['/hooks/1'] }, 'OutgoingUrls[0]'],
    ['a non-https URL', { Name: 'plain', OutgoingUrls: ['http://a.example.com/5'] }, 'OutgoingUrls[0]'],
    ['an ftp URL', { Name: 'ftp', OutgoingUrls: ['ftp://a.example.com/5'] }, 'OutgoingUrls[0]'],
    ['a URL with credentials', { Name: 'creds', OutgoingUrls: ['https://a.example.com/ok', 'https://user:pass@a.example.com/5'] }, 'OutgoingUrls[1]'],
    [
      'a duplicate URL',
      { Name: 'dup', OutgoingUrls: ['https://a.example.com/6', 'https://A.example.com:443/6'] },
      'OutgoingUrls[1]',
    ],
    [
      'a URL too long once percent-encoded (2000 CJK characters)',
      { Name: 'cjk', OutgoingUrls: [`https://a.example.com/${Array.from({ length: 2000 }, (_, n) => String.fromCodePoint(0x4e00 + n)).join('')}`] },
      'OutgoingUrls[0]',
    ],
    ['a loopback address', { Name: 'lo', OutgoingUrls: ['https://127.0.0.1/x'] }, 'OutgoingUrls[0]'],
    ['localhost', { Name: 'lh', OutgoingUrls: ['https://localhost:8443/x'] }, 'OutgoingUrls[0]'],
    ['a private address', { Name: 'priv', OutgoingUrls: ['https://192.168.1.10/x'] }, 'OutgoingUrls[0]'],
    ['a link-local address', { Name: 'll', OutgoingUrls: ['https://169.254.169.254/latest'] }, 'OutgoingUrls[0]'],
    ['an IPv6 loopback', { Name: 'lo6', OutgoingUrls: ['https://[::1]/x'] }, 'OutgoingUrls[0]'],
    ['an IPv4-mapped private address', { Name: 'map', OutgoingUrls: ['https://[::ffff:10.0.0.1]/x'] }, 'OutgoingUrls[0]'],
    [
      'too many URLs',
      { Name: 'many', OutgoingUrls: [1, 2, 3, 4].map((n) => `https://many.example.com/${n}`) },
      'OutgoingUrls',
    ],
    ['negative CallThrottling', { Name: 'neg', OutgoingUrls: ['https://a.example.com/7'], CallThrottling: -1 }, 'CallThrottling'],
    ['CallThrottling above the maximum', { Name: 'big', OutgoingUrls: ['https://a.example.com/8'], CallThrottling: 51 }, 'CallThrottling'],
    ['fractional CallThrottling', { Name: 'frac', OutgoingUrls: ['https://a.example.com/9'], CallThrottling: 1.5 }, 'CallThrottling'],
    ['CallThrottling as a string', { Name: 'strthr', OutgoingUrls: ['https://a.example.com/10'], CallThrottling: '8' }, 'CallThrottling'],
    ['Enabled not a boolean', { Name: 'en', OutgoingUrls: ['https://a.example.com/11'], Enabled: 'yes' }, 'Enabled'],
    [
      'DefaultPayloadIncludesSecret not a boolean',
      { Name: 'dpis', OutgoingUrls: ['https://a.example.com/12'], DefaultPayloadIncludesSecret: 1 },
      'DefaultPayloadIncludesSecret',
    ],
    ['a body that is a list', [{ Name: 'list' }], ''],
  ];

  it.each(cases)('%s', async (_label, body, field) => {
    const response = await gw.request('POST', '/v2/outgoingWebhooks', { token, body });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      Code: 'IncorrectBodyParameter',
      Resource: '/v2/outgoingWebhooks',
      RequestId: response.headers.get('x-request-id'),
    });
    if (field) expect(response.body.Message.startsWith(field.includes(':') ? field : `${field}: `)).toBe(true);
    expect(response.body.Message).not.toContain('pass@'); // credentials are not echoed
    expect(JSON.stringify(response.body)).not.toMatch(/at .*\.ts:\d+/); // no stack trace
  });

  it('refuses a duplicate Name', async () => {
    const first = uniqueWebhook();
    expect((await gw.request('POST', '/v2/outgoingWebhooks', { token, body: first })).status).toBe(201);
    const again = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { ...first, OutgoingUrls: ['https://other.example.com/dup-name'] },
    });
    expect(again.status).toBe(400);
    expect(again.body.Code).toBe('IncorrectBodyParameter');
    expect(again.body.Message).toMatch(/^Name: .*already exists/);
  });

  it('refuses a URL that belongs to another webhook', async () => {
    const first = uniqueWebhook();
    await gw.request('POST', '/v2/outgoingWebhooks', { token, body: first });
    const second = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: uniqueWebhook({ OutgoingUrls: ['https://fresh.example.com/x', first.OutgoingUrls[0]] }),
    });
    expect(second.status).toBe(400);
    expect(second.body.Message).toMatch(/^OutgoingUrls\[1\]: .*already belongs to webhook/);
  });

  it('refuses a duplicate Name on update too', async () => {
    const a = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const b = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const clash = await gw.request('PUT', `/v2/outgoingWebhooks/${b.body.Id}`, { token, body: { Name: a.body.Name } });
    expect(clash.status).toBe(400);
    expect(clash.body.Message).toMatch(/^Name: /);
  });

  it('validates updates with the same rules', async () => {
    const hook = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook() });
    const bad = await gw.request('PUT', `/v2/outgoingWebhooks/${hook.body.Id}`, { token, body: { OutgoingUrls: [] } });
    expect(bad.status).toBe(400);
    expect(bad.body.Message).toMatch(/^OutgoingUrls: /);
    const unchanged = await gw.request('GET', `/v2/outgoingWebhooks/${hook.body.Id}`, { token });
    expect(unchanged.body.OutgoingUrls).toEqual(hook.body.OutgoingUrls);
  });

  it('answers malformed JSON with 400', async () => {
    const response = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: '{"Name": "x",' });
    expect(response.status).toBe(400);
    expect(response.body.Code).toBe('IncorrectBodyParameter');
    expect(response.body.Message).toMatch(/Malformed JSON/);
  });

  it('answers a body that is not JSON with 415', async () => {
    const response = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: 'Name=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(response.status).toBe(415);
    expect(response.body.Code).toBe('UnsupportedMediaType');
  });

  it('takes application/json and +json types as JSON, and answers other types starting with json with 415', async () => {
    for (const contentType of ['application/json; charset=utf-8', 'Application/JSON', 'application/vnd.api+json']) {
      const response = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook(), headers: { 'content-type': contentType } });
      expect(response.status, contentType).toBe(201);
    }
    for (const contentType of ['application/json-patch', 'application/jsonp', 'application/json5']) {
      const response = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: uniqueWebhook(), headers: { 'content-type': contentType } });
      expect(response.status, contentType).toBe(415);
      expect(response.body.Code).toBe('UnsupportedMediaType');
    }
  });

  it('answers an oversized body with 413', async () => {
    const response = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { Name: 'big', OutgoingUrls: ['https://a.example.com/big'], Description: 'x'.repeat(1_100_000) },
    });
    expect(response.status).toBe(413);
    expect(response.body.Code).toBe('PayloadTooLarge');
  });

  it('answers an unknown webhook id with 404 on every verb', async () => {
    for (const [method, path] of [
      ['GET', '/v2/outgoingWebhooks/nope00'],
      ['PUT', '/v2/outgoingWebhooks/nope00'],
      ['DELETE', '/v2/outgoingWebhooks/nope00'],
      ['PATCH', '/v2/outgoingWebhooks/nope00/regenerateSecret'],
    ] as const) {
      const response = await gw.request(method, path, { token, body: method === 'PUT' ? { Enabled: true } : undefined });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body).toMatchObject({ Code: 'ObjectNotFound', Resource: path });
    }
  });

  it('answers an unknown route with 404', async () => {
    const response = await gw.request('GET', '/v2/somethingElse', { token });
    expect(response.status).toBe(404);
    expect(response.body.Code).toBe('ObjectNotFound');
  });
});

describe('authentication and permissions', () => {
  it('answers a request without a token with 401', async () => {
    const response = await gw.request('GET', '/v2/outgoingWebhooks');
    expect(response.status).toBe(401);
    expect(response.body.Code).toBe('Unauthorized');
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
  });

  it('answers an unknown token with 401', async () => {
    const response = await gw.request('GET', '/v2/outgoingWebhooks', { token: 'not-a-token' });
    expect(response.status).toBe(401);
  });

  it('answers a read-only profile writing with 403 UnsufficientPrivileges', async () => {
    for (const [method, path, body] of [
      ['POST', '/v2/outgoingWebhooks', uniqueWebhook()],
      ['PUT', '/v2/outgoingWebhooks/abc123', { Enabled: false }],
      ['DELETE', '/v2/outgoingWebhooks/abc123', undefined],
      ['PATCH', '/v2/outgoingWebhooks/abc123/regenerateSecret', undefined],
    ] as const) {
      const response = await gw.request(method, path, { token: readOnlyToken, body });
      expect(response.status, `${method} ${path}`).toBe(403);
      expect(response.body.Code).toBe('UnsufficientPrivileges');
    }
    // Whatever the body: it is not read for a caller who may not write.
    for (const [body, contentType] of [['{bad', 'application/json'], ['{}', 'text/plain']] as const) {
      const response = await gw.request('POST', '/v2/outgoingWebhooks', { token: readOnlyToken, body, headers: { 'content-type': contentType } });
      expect(response.status, `${contentType} ${body}`).toBe(403);
      expect(response.body.Code).toBe('UnsufficientPrivileges');
    }
  });
});

describe('an unexpected failure', () => {
  it('is a 500 InternalError in the contract shape over REST and GraphQL, its details kept out of the answer', async () => {
    const { db } = gw.gateway.database;
    // A fault no request can cause: the webhooks table is gone for a moment.
    await db.execute(sql`alter table webhook_gateway.webhooks rename to webhooks_away`);
    try {
      const rest = await gw.request('GET', '/v2/outgoingWebhooks', { token });
      expect(rest.status).toBe(500);
      expect(rest.body).toEqual({
        Code: 'InternalError',
        Message: 'An internal error occurred',
        Resource: '/v2/outgoingWebhooks',
        RequestId: expect.any(String),
      });
      const graphql = await gw.graphql('{ outgoingWebhooks { id } }', {}, token);
      expect(graphql.body.errors).toEqual([expect.objectContaining({ message: 'Internal error', extensions: { code: 'InternalError' } })]);
      for (const text of [JSON.stringify(rest.body), JSON.stringify(graphql.body)]) {
        expect(text).not.toMatch(/webhooks_away|relation|select|\.ts:\d+/i);
      }
    } finally {
      await db.execute(sql`alter table webhook_gateway.webhooks_away rename to webhooks`);
    }
    expect((await gw.request('GET', '/v2/outgoingWebhooks', { token })).status).toBe(200);
  });
});
