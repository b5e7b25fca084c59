"""The gateway's business logic: typed functions with keyword-only arguments. The API, the admin,
the commands and the tasks call these and nothing else that writes."""
from mailservice.services.delivery import message_claim, message_deliver, retry_delay
from mailservice.services.keys import api_key_authenticate, api_key_create, api_key_revoke, api_keys_revoke
from mailservice.services.messages import (
    message_cancel,
    message_accept,
    message_retry,
    request_fingerprint,
)
from mailservice.services.recovery import message_recover
from mailservice.services.suppressions import suppression_add, suppression_remove

__all__ = [
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "api_keys_revoke",
    "message_cancel",
    "message_claim",
    "message_deliver",
    "message_accept",
    "message_recover",
    "message_retry",
    "request_fingerprint",
    "retry_delay",
    "suppression_add",
    "suppression_remove",
]
