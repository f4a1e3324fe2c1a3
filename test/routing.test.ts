/**
 * Routing, table-driven: precedence (exact > postmaster > patterns by
 * specificity), normalisation (case, quotes, IDNA), subaddress tags
 * (mailboxHash), regex captures in target URLs, sender and client
 * conditions, `stop: false` chains, header conditions, and the load-time
 * check that refuses regexes that can backtrack catastrophically.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildRoutingTable,
  checkRegex,
  expandUrl,
  headerConditionHolds,
  MAX_PATTERN_LENGTH,
  MAX_REGEX_INPUT,
  normaliseForRouting,
  resolveTargets,
  routeRecipient,
  urlTemplateProblem,
  type RoutableTarget,
  type RouteDef,
  type SenderContext,
} from '../src/routing/index.js';
import { defaultWebhookId } from '../src/message/ids.js';

const t = (id: string, extra: Partial<RoutableTarget> = {}): RoutableTarget => ({ id, required: true, ...extra });

const ROUTES: RouteDef[] = [
  { name: 'exact', recipients: ['Sales@Example.test', '"john.doe"@example.test'], targets: [t('a')] },
  { name: 'wild', recipients: ['*@example.test'], targets: [t('b')] },
  { name: 'plus', recipients: ['support+*@example.test'], targets: [t('c')] },
  { name: 'support', recipients: ['support@example.test'], targets: [t('s')] },
  {
    name: 'tickets',
    recipients: [{ local: 'ticket-(?<id>[0-9]+)', domain: ['example.test', 'example.org'] }],
    targets: [t('tk', { url: 'https://app.test/tickets/{id}?to={local}&tag={tag}' })],
  },
  { name: 'idn', recipients: ['info@bücher.example'], targets: [t('i')] },
  { name: 'idn-ascii', recipients: ['*@xn--mnchen-3ya.example'], targets: [t('m')] },
  { name: 'partners', recipients: ['orders@example.test'], from: ['*@partner.test', '<>'], targets: [t('p')] },
  { name: 'office', recipients: ['printer@example.test'], clients: ['10.0.0.0/8', '2001:db8::/32'], targets: [t('o')] },
  { name: 'whole-domain', recipients: [{ domain: 'whole.test' }], targets: [t('w')] },
  { name: 'audit', recipients: ['ceo@corp.test'], stop: false, targets: [t('audit')] },
  { name: 'corp', recipients: ['*@corp.test'], targets: [t('corp')] },
  { name: 'catch-all', recipients: ['*'], targets: [t('all')] },
];
const SERVED = ['example.test', 'example.org', 'xn--bcher-kva.example', 'xn--mnchen-3ya.example', 'whole.test', 'corp.test', 'other.test'];
const table = buildRoutingTable(ROUTES, SERVED, [t('pm')]);

function decide(address: string, ctx: SenderContext = {}) {
  const d = routeRecipient(table, address, ctx);
  if (d.kind !== 'accept') return { route: d.kind, hash: null, targets: [] as string[] };
  return { route: d.route.name, hash: d.mailboxHash, targets: resolveTargets(d).map((r) => r.url ?? r.id) };
}

describe('routing decisions (table)', () => {
  const cases: [string, string, string | null, SenderContext?][] = [
    // [recipient, route (or refusal kind), mailboxHash, sender context]
    ['sales@example.test', 'exact', null],
    ['SALES@EXAMPLE.TEST', 'exact', null],
    ['"sales"@example.test', 'exact', null], // unnecessary quotes are not part of the address
    ['sales@example.test.', 'exact', null], // trailing dot of the domain
    ['anyone@example.test', 'wild', null],
    ['"john doe"@example.test', 'wild', null], // quotes that are needed: still routable
    ['John.Doe@example.test', 'exact', null], // the pattern was written quoted
    ['"JOHN.DOE"@example.test', 'exact', null],
    // subaddresses (RFC 5233): the tag is the mailboxHash, as written
    ['sales+Q4@example.test', 'exact', 'Q4'],
    ['support+123@example.test', 'plus', '123'], // support+* is more specific than support@
    ['support@example.test', 'support', null],
    ['anyone+x@example.test', 'wild', 'x'],
    ['+x@example.test', 'wild', null], // no user part: no subaddress
    // postmaster (RFC 5321 §4.5.1) beats every pattern of a served domain
    ['PostMaster@example.test', 'postmaster', null],
    ['postmaster', 'postmaster', null],
    ['postmaster@gmail.com', 'relay-denied', null],
    // regex with named captures, on either of its literal domains
    ['ticket-42@example.test', 'tickets', null],
    ['Ticket-42@EXAMPLE.ORG', 'tickets', null],
    ['ticket-42+urgent@example.test', 'tickets', 'urgent'],
    ['ticket-x@example.org', 'catch-all', null],
    // IDNA (RFC 5890/5891): a pattern in either form matches both forms
    ['info@xn--bcher-kva.example', 'idn', null],
    ['INFO@Bücher.Example', 'idn', null],
    ['x@münchen.example', 'idn-ascii', null],
    ['x@xn--mnchen-3ya.example', 'idn-ascii', null],
    // sender and client conditions: a route whose condition fails is passed over
    ['orders@example.test', 'partners', null, { mailFrom: 'Bob@Partner.TEST' }],
    ['orders@example.test', 'partners', null, { mailFrom: '' }],
    ['orders@example.test', 'wild', null, { mailFrom: 'bob@evil.test' }],
    ['printer@example.test', 'office', null, { clientAddress: '10.1.2.3' }],
    ['printer@example.test', 'office', null, { clientAddress: '::ffff:10.1.2.3' }],
    ['printer@example.test', 'wild', null, { clientAddress: '192.0.2.1' }],
    // a domain-only object pattern, the catch-all of the served domains
    ['anyone@whole.test', 'whole-domain', null],
    ['anyone@other.test', 'catch-all', null],
    // never an open relay: the catch-all does not reach other domains
    ['victim@elsewhere.example', 'relay-denied', null],
    ['no-at-sign', 'invalid', null],
    // stop: false adds the next matching route
    ['ceo@corp.test', 'audit+corp', null],
    ['cfo@corp.test', 'corp', null],
  ];
  for (const [address, route, hash, ctx] of cases) {
    test(`${address}${ctx ? ` ${JSON.stringify(ctx)}` : ''} → ${route}`, () => {
      const d = decide(address, ctx);
      assert.equal(d.route, route);
      assert.equal(d.hash, hash);
    });
  }

  test('unknown user when nothing matches in a served domain, with the routes passed over', () => {
    const small = buildRoutingTable([{ name: 'p', recipients: ['orders@shop.test'], from: ['*@partner.test'], targets: [t('p')] }], ['shop.test'], [t('pm')]);
    const d = routeRecipient(small, 'orders@shop.test', { mailFrom: 'x@evil.test' });
    assert.equal(d.kind, 'unknown-user');
    assert.match(d.kind === 'unknown-user' ? d.passedOver[0]!.reason : '', /sender <x@evil\.test> is not one of \*@partner\.test/);
    assert.equal(routeRecipient(small, 'nobody@shop.test').kind, 'unknown-user');
  });

  test('one transaction, one route: equal chains share a key, the postmaster route is its own', () => {
    const a = routeRecipient(table, 'a@example.test');
    const b = routeRecipient(table, 'b@example.test');
    const c = routeRecipient(table, 'ceo@corp.test');
    const pm = routeRecipient(table, 'postmaster@example.test');
    assert.ok(a.kind === 'accept' && b.kind === 'accept' && c.kind === 'accept' && pm.kind === 'accept');
    assert.equal(a.route, b.route);
    assert.notEqual(a.route.key, c.route.key);
    assert.notEqual(a.route.key, pm.route.key);
    assert.deepEqual(c.route.targets.map((x) => x.id), ['audit', 'corp']);
  });

  test('equally specific patterns are tried in configuration order', () => {
    const tie = buildRoutingTable(
      [
        { name: 'first', recipients: ['a*@x.test'], targets: [t('1')] },
        { name: 'second', recipients: ['*a@x.test'], targets: [t('2')] },
      ],
      ['x.test'],
      [t('pm')],
    );
    const d = routeRecipient(tie, 'aa@x.test');
    assert.equal(d.kind === 'accept' && d.route.name, 'first');
  });
});

describe('target URLs from captures', () => {
  test('named captures, {local} and {tag} are percent-encoded into path and query', () => {
    const d = decide('ticket-42+a/b?c@example.test');
    assert.deepEqual(d.targets, ['https://app.test/tickets/42?to=ticket-42%2Ba%2Fb%3Fc&tag=a%2Fb%3Fc']);
  });

  test('recipients resolving to the same URL share a target id; ids are stable and default ids follow the URL', () => {
    const one = routeRecipient(table, 'ticket-7@example.test');
    const two = routeRecipient(table, 'TICKET-7@example.org');
    const other = routeRecipient(table, 'ticket-8@example.test');
    assert.ok(one.kind === 'accept' && two.kind === 'accept' && other.kind === 'accept');
    const id = (d: typeof one) => (d.kind === 'accept' ? resolveTargets(d)[0]!.id : '');
    // a configured id gets a digest of the resolved URL
    assert.match(id(one), /^tk~[0-9a-f]{12}$/);
    assert.notEqual(id(one), id(other));
    // the URL uses {id} and {local} (not {domain}): both recipients resolve to one URL, one target
    assert.equal(id(one), id(two));
    const tmpl = 'https://h.test/u/{user}';
    const plain = buildRoutingTable([{ name: 'r', recipients: ['*@h.test'], targets: [{ id: defaultWebhookId(tmpl), required: true, url: tmpl }] }], ['h.test'], []);
    const r = routeRecipient(plain, 'Bob+x@h.test');
    assert.ok(r.kind === 'accept');
    assert.deepEqual(resolveTargets(r).map((x) => [x.id, x.url]), [[defaultWebhookId('https://h.test/u/bob'), 'https://h.test/u/bob']]);
  });

  test('placeholders never reach scheme, host or port; "." and ".." cannot climb the path', () => {
    assert.match(urlTemplateProblem('https://{domain}/in') ?? '', /never in its scheme, host or port/);
    assert.match(urlTemplateProblem('https://h.test:{port}/in') ?? '', /never in its scheme, host or port/);
    assert.match(urlTemplateProblem('{scheme}://h.test/in') ?? '', /never in its scheme, host or port/);
    assert.equal(urlTemplateProblem('https://h.test/in/{local}?d={domain}'), null);
    // WHATWG URL reads %2E%2E as "..", so dots-only values are encoded twice
    assert.equal(expandUrl('https://h.test/a/{x}/b', { x: '..' }), 'https://h.test/a/%252E%252E/b');
    assert.equal(new URL(expandUrl('https://h.test/a/{x}/b', { x: '..' })).pathname, '/a/%252E%252E/b');
    assert.equal(new URL(expandUrl('https://h.test/a/{x}/b', { x: '.' })).pathname, '/a/%252E/b');
    assert.equal(expandUrl('https://h.test/a/{x}', { x: '@evil.test/x' }), 'https://h.test/a/%40evil.test%2Fx');
  });
});

describe('header conditions (after DATA)', () => {
  const hdrs = [
    { name: 'Subject', value: 'hello' },
    { name: 'X-Priority', value: '1 (Highest)' },
  ];
  test('a regex on any value of the field, case-insensitive; absent regex means "present"', () => {
    assert.equal(headerConditionHolds(table, { header: 'x-priority', matches: '^1' }, hdrs), true);
    assert.equal(headerConditionHolds(table, { header: 'X-Priority', matches: '^5' }, hdrs), false);
    assert.equal(headerConditionHolds(table, { header: 'subject', matches: 'HELLO' }, hdrs), true);
    assert.equal(headerConditionHolds(table, { header: 'X-Spam-Flag' }, hdrs), false);
    assert.equal(headerConditionHolds(table, { header: 'Subject' }, hdrs), true);
    assert.equal(headerConditionHolds(table, undefined, hdrs), true);
  });
});

describe('normalisation', () => {
  test('case, quotes, IDNA, NFC, subaddress', () => {
    const n = normaliseForRouting('"Jöhn.Doe+Tag"@Bücher.Example.');
    assert.deepEqual(n && { address: n.address, user: n.user, tag: n.tag, unicode: n.unicodeDomain }, {
      address: 'jöhn.doe+tag@xn--bcher-kva.example',
      user: 'jöhn.doe',
      tag: 'Tag',
      unicode: 'bücher.example',
    });
    // NFD and NFC spellings of the same local part are one address (RFC 6531)
    assert.equal(normaliseForRouting('jo\u0308hn@x.test')?.address, normaliseForRouting('j\u00f6hn@x.test')?.address);
  });
});

describe('regex safety (checked at load)', () => {
  const refused: [string, RegExp][] = [
    ['(a+)+$', /nested quantifiers/],
    ['(a*)*', /nested quantifiers/],
    ['(\\w{1,3})+', /nested quantifiers/],
    ['(x+x+)+y', /nested quantifiers/],
    ['(a|ab)+', /alternatives that can match the same text/],
    ['(\\w|\\d)*', /alternatives that can match the same text/],
    ['([a-z]|x)+', /alternatives that can match the same text/],
    ['\\d+\\d+', /adjacent unbounded quantifiers/],
    ['.*.*=', /adjacent unbounded quantifiers/],
    ['(a?)*', /nested quantifiers|empty string/],
    ['(a)\\1', /back-references/],
    ['(?<x>a)\\k<x>', /back-references/],
    ['a'.repeat(MAX_PATTERN_LENGTH + 1), /longer than/],
    ['(unclosed', /not a valid regular expression/],
  ];
  for (const [re, why] of refused) {
    test(`refused: ${re.length > 30 ? `${re.slice(0, 30)}…` : re}`, () => {
      const r = checkRegex(re);
      assert.ok('problem' in r, `accepted ${re}`);
      assert.match(r.problem, why);
    });
  }
  const accepted: [string, string[]][] = [
    ['ticket-(?<id>[0-9]+)', ['id']],
    ['(?<dept>[a-z]+)-(?<n>\\d{1,6})', ['dept', 'n']],
    ['(x\\d{3})+', []],
    ['(a|b)+', []],
    ['[^@]+', []],
    ['^bounce-(?<token>[a-z0-9]+)=(?<domain>[a-z0-9.-]+)$', ['token', 'domain']],
  ];
  for (const [re, names] of accepted) {
    test(`accepted: ${re}`, () => {
      const r = checkRegex(re);
      assert.ok('info' in r, JSON.stringify(r));
      assert.deepEqual(r.info.names, names);
    });
  }

  test('the refused classic really is catastrophic, and refused patterns never reach the table', () => {
    // The check is not paranoia: (a+)+$ on 24 "a"s and a "!" takes measurable time already.
    const started = performance.now();
    /^(?:(a+)+$)$/.test(`${'a'.repeat(24)}!`);
    assert.ok(performance.now() - started > 5, 'expected exponential backtracking');
    assert.throws(() => buildRoutingTable([{ name: 'bad', recipients: [{ local: '(a+)+$', domain: 'x.test' }], targets: [t('x')] }], ['x.test'], []), /nested quantifiers/);
  });

  test('regexes only run on local parts up to MAX_REGEX_INPUT characters', () => {
    assert.equal(decide(`ticket-${'1'.repeat(MAX_REGEX_INPUT - 7)}@example.org`).route, 'tickets');
    assert.equal(decide(`ticket-${'1'.repeat(MAX_REGEX_INPUT)}@example.org`).route, 'catch-all');
  });
});
