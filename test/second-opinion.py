"""The second opinion for test/second-opinion.test.ts: Python's email package
(the standard library, policy.default) reads each message named on the command
line and prints, as one JSON object keyed by path, the fields the test compares
with postgate's parse.

Only the reading of the bytes is Python's: header decoding (RFC 2047), address
lists (RFC 5322 §3.4), dates, MIME structure, transfer encodings and charsets.
Which leaf parts count as body text and which as attachments is postgate's rule
(docs/payload.md, attachments), applied here to Python's tree, so that the
comparison is about parsing, not about two different definitions of
"attachment":

- multipart/* parts are containers (one Python could not split holds
  nothing); every other part is a leaf (an attached message/rfc822 is one
  attachment, not descended into);
- a text/plain or text/html leaf whose Content-Disposition is absent or
  "inline" is body text; one that also names a file is an attachment too;
- every other leaf is an attachment.

Run with the system interpreter (the one whose standard library the Debian
packages belong to); it needs nothing outside the standard library.
"""

import datetime
import email
import json
import sys
from email import policy


def header_text(msg, name):
    try:
        value = msg[name]
    except Exception as err:  # a header the parser cannot represent
        return {"error": repr(err)}
    return None if value is None else str(value)


def addresses(msg, name):
    try:
        values = msg.get_all(name)
    except Exception as err:
        return {"error": repr(err)}
    if values is None:
        return None
    out = []
    for value in values:
        try:
            for addr in value.addresses:
                out.append(addr.addr_spec)
        except Exception as err:
            out.append({"error": repr(err)})
    return out


def date(msg):
    try:
        value = msg["date"]
    except Exception as err:
        return {"error": repr(err)}
    if value is None:
        return None
    dt = getattr(value, "datetime", None)
    if dt is None:
        return None
    if dt.tzinfo is None:  # "-0000": UTC without an offset (RFC 5322 §3.3)
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def message_id(msg):
    value = header_text(msg, "message-id")
    if not isinstance(value, str):
        return value
    value = value.strip()
    if value.startswith("<") and ">" in value:
        value = value[1 : value.index(">")]
    return "".join(value.split())


def leaves(part):
    if part.get_content_maintype() == "multipart":
        # A multipart Python could not split (no boundary, or none found) has a string
        # payload and, for Python, neither body text nor attachments.
        if part.is_multipart():
            for sub in part.get_payload():
                yield from leaves(sub)
    else:
        yield part


def text_of(part):
    try:
        return part.get_content()
    except Exception:
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def fields(data):
    msg = email.message_from_bytes(data, policy=policy.default)
    texts, htmls, attachments = [], [], []
    for leaf in leaves(msg):
        ctype = leaf.get_content_type()
        disposition = leaf.get_content_disposition()
        try:
            filename = leaf.get_filename()
        except Exception:
            filename = None
        body = ctype in ("text/plain", "text/html") and disposition in (None, "inline")
        if body:
            (texts if ctype == "text/plain" else htmls).append(text_of(leaf))
        if not body or filename:
            size = None
            if not leaf.is_multipart():
                payload = leaf.get_payload(decode=True)
                size = None if payload is None else len(payload)
            attachments.append({"filename": filename, "contentType": ctype, "size": size})
    return {
        "subject": header_text(msg, "subject"),
        "from": addresses(msg, "from"),
        "to": addresses(msg, "to"),
        "cc": addresses(msg, "cc"),
        "date": date(msg),
        "messageId": message_id(msg),
        "text": "\n".join(texts) if texts else None,
        "html": bool(htmls),
        "attachments": attachments,
        "defects": sorted({type(d).__name__ for part in msg.walk() for d in part.defects}),
    }


def main():
    out = {}
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            data = f.read()
        try:
            out[path] = fields(data)
        except Exception as err:
            out[path] = {"error": repr(err)}
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
