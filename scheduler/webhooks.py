"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what a receiver checks.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the key is the base64-decoded
part of the owner's `whsec_...` secret; the header is `v1,<base64 HMAC-SHA256>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed message (the id stays the same for every retry of it, so a
    receiver can drop a repeat)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
