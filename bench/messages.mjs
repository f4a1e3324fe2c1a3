/**
 * The messages the parse benchmark (parse.mjs) and the profiling loop
 * (profile.mjs) parse: composed once with nodemailer's MailComposer from
 * deterministic text and bytes, so every run parses the same bytes.
 */
import MailComposer from 'nodemailer/lib/mail-composer';

/** A deterministic pseudo-random byte source (xorshift32), so every run parses the same bytes. */
export function prng(seed) {
  let x = seed >>> 0 || 1;
  return (buf) => {
    for (let i = 0; i < buf.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf[i] = x & 0xff;
    }
    return buf;
  };
}

const WORDS = (
  'the quarterly update brings new features to the dashboard including faster search saved filters ' +
  'and an improved export for teams we also fixed several issues reported by customers thank you for ' +
  'the feedback read more on our blog or reply to this message if you have questions about your account ' +
  'upcoming events webinar workshop release notes pricing changes security advisory community highlights'
).split(' ');

export function prose(words, seed) {
  const next = prng(seed);
  const b = Buffer.alloc(1);
  const out = [];
  for (let i = 0; i < words; i++) out.push(WORDS[next(b)[0] % WORDS.length]);
  return out.join(' ');
}

/** Wraps text at ~72 columns, as a mail client would. */
export function wrap(text, width = 72) {
  const lines = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.join('\n');
}

/** A newsletter-like text + HTML body: ~1.7 KB of text, ~3 KB of HTML. */
function newsletter() {
  const paras = [prose(60, 1), prose(70, 2), prose(50, 3), prose(45, 4)];
  const text = [
    'Hello Jane,',
    '',
    ...paras.flatMap((p) => [wrap(p), '']),
    'Read online: https://news.example.com/2024/06/update?utm_source=mail',
    'Unsubscribe: https://news.example.com/unsubscribe?u=8c1f2e',
    '',
    '-- ',
    'Example Corp, 1 Main Street, Springfield',
  ].join('\n');
  const html = [
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>June update</title>',
    '<style>body{font-family:Arial,sans-serif;color:#222}.btn{background:#0a66c2;color:#fff;padding:8px 16px;text-decoration:none}</style>',
    '</head><body><table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">',
    '<table width="600" cellpadding="16" cellspacing="0" style="border:1px solid #ddd">',
    '<tr><td><h1 style="font-size:22px">June update</h1><p>Hello Jane,</p>',
    ...paras.map((p, i) => `<p style="line-height:1.5">${p}${i === 1 ? ' <a href="https://news.example.com/blog/search">search</a>' : ''}</p>`),
    '<p><a class="btn" href="https://news.example.com/2024/06/update?utm_source=mail&amp;utm_medium=email">Read more</a></p>',
    '</td></tr><tr><td style="font-size:11px;color:#888">Example Corp, 1 Main Street, Springfield &middot; ',
    '<a href="https://news.example.com/unsubscribe?u=8c1f2e">Unsubscribe</a></td></tr>',
    '</table></td></tr></table></body></html>',
  ].join('\n');
  return { text, html };
}

const HEADERS = {
  from: '"Example News" <news@example.com>',
  to: '"Jane Doe" <jane@example.org>',
  subject: 'Your June update: faster search, saved filters and more',
  date: new Date('2024-06-03T09:30:00Z'),
  messageId: '<20240603093000.4f2a@news.example.com>',
  headers: { 'List-Unsubscribe': '<https://news.example.com/unsubscribe?u=8c1f2e>' },
};

async function compose(opts) {
  return new MailComposer({ ...HEADERS, ...opts }).compile().build();
}

/** Plain text/plain of about `bytes` on the wire. */
async function plainOf(bytes) {
  let words = Math.round(bytes / 6);
  for (;;) {
    const buf = await compose({ text: wrap(prose(words, 7)) });
    if (buf.length >= bytes * 0.98 && buf.length <= bytes * 1.02) return buf;
    words = Math.max(1, Math.round((words * bytes) / buf.length));
  }
}

export async function messages() {
  const body = newsletter();
  const attachment = prng(42)(Buffer.alloc(64 * 1024));
  return [
    { id: 'realistic-5k', label: 'text + HTML newsletter', realistic: true, buf: await compose(body) },
    {
      id: 'realistic-94k',
      label: 'text + HTML, 64 KiB binary attachment (base64)',
      realistic: true,
      buf: await compose({ ...body, attachments: [{ filename: 'report.pdf', contentType: 'application/pdf', content: attachment }] }),
    },
    { id: 'plain-4k', label: 'text/plain only', realistic: false, buf: await plainOf(4 * 1024) },
    { id: 'plain-100k', label: 'text/plain only', realistic: false, buf: await plainOf(100 * 1024) },
  ];
}

