"""Tracking webhook posts in each provider's documented format, signed as the provider signs.

Secrets match WEBHOOK_SETTINGS; `forge=True` signs with a wrong key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlencode

WEBHOOK_SECRET = "hook-user:hook-password-1234"
MAILGUN_SIGNING_KEY = "mailgun-webhook-signing-key-5678"
MANDRILL_WEBHOOK_KEY = "mandrill-webhook-key-9012"

WEBHOOK_SETTINGS = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY,
    "MANDRILL_WEBHOOK_KEY": MANDRILL_WEBHOOK_KEY,
}

# The ESPs whose endpoints answer in these tests (MAILSERVICE_WEBHOOK_PROVIDERS): the test
# settings' chain has none of them.
WEBHOOK_PROVIDERS = ["sendgrid", "mailgun", "mandrill"]

SENDGRID_URL = "/anymail/sendgrid/tracking/"
MAILGUN_URL = "/anymail/mailgun/tracking/"
MANDRILL_URL = "/anymail/mandrill/"


def basic_auth(secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()}


# SendGrid: a JSON list of events; Anymail reads the message id from custom_args.anymail_id.


def sendgrid_event(event: str, email: str, anymail_id: str, **extra) -> dict:
    body = {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": extra.pop("sg_event_id", uuid.uuid4().hex),
        "sg_message_id": "sgmsg.filter0001.1",
        "anymail_id": anymail_id,
        "smtp-id": "<x@sendgrid>",
    }
    if event == "bounce":
        body.update({"type": "bounce", "reason": "550 5.1.1 user unknown", "status": "5.1.1"})
    body.update(extra)
    return body


def sendgrid_post(client, events: list[dict], *, forge: bool = False):
    auth = basic_auth("hook-user:wrong-password" if forge else WEBHOOK_SECRET)
    return client.post(SENDGRID_URL, data=json.dumps(events), content_type="application/json", **auth)


# Mailgun: one JSON event per post, signed with HMAC-SHA256(timestamp + token).


def mailgun_event(event: str, email: str, message_id: str, *, severity: str = "permanent", **extra) -> dict:
    data = {
        "event": event,
        "id": uuid.uuid4().hex[:22],
        "timestamp": time.time(),
        "recipient": email,
        "message": {"headers": {"message-id": message_id.strip("<>")}},
        "log-level": "info",
    }
    if event == "failed":
        data.update(
            {
                "severity": severity,
                "reason": "bounce" if severity == "permanent" else "generic",
                "delivery-status": {"code": 550, "message": "No such user", "description": ""},
            }
        )
    data.update(extra)
    return data


def mailgun_body(
    event_data: dict, *, forge: bool = False, timestamp: int | None = None, token: str | None = None
) -> str:
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex
    key = b"not-the-key" if forge else MAILGUN_SIGNING_KEY.encode()
    signature = hmac.new(key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
    )


def mailgun_post(client, event_data: dict, **kwargs):
    return client.post(
        MAILGUN_URL, data=mailgun_body(event_data, **kwargs), content_type="application/json", **basic_auth()
    )


# Mandrill: form field mandrill_events (a JSON list), signed with HMAC-SHA1 over URL + params.


def mandrill_event(event: str, email: str, message_id: str, **extra) -> dict:
    body = {
        "event": event,
        "_id": message_id,
        "ts": int(time.time()),
        "msg": {
            "_id": message_id,
            "email": email,
            "state": "sent",
            "subject": "Hello",
            "sender": "app@example.com",
        },
    }
    if event in ("hard_bounce", "soft_bounce"):
        body["msg"].update(
            {"state": "bounced", "bounce_description": "bad_mailbox", "diag": "smtp;550 5.1.1"}
        )
    body.update(extra)
    return body


def mandrill_post(client, events: list[dict], *, forge: bool = False):
    params = {"mandrill_events": json.dumps(events)}
    # Mandrill signs the URL exactly as configured there, basic-auth credentials included.
    url = f"http://{WEBHOOK_SECRET}@testserver" + MANDRILL_URL
    signed = url + "".join(key + params[key] for key in sorted(params))
    key = b"wrong" if forge else MANDRILL_WEBHOOK_KEY.encode()
    signature = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha1).digest()).decode()
    return client.post(
        MANDRILL_URL,
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_MANDRILL_SIGNATURE=signature,
        **basic_auth(),
    )
