"""A local stand-in for the SendGrid, Mailgun and Mandrill HTTP APIs (docs/sandbox.md).

It lets the unmodified Anymail backends send over real sockets, can be told to fail in each way
a real provider fails, and posts signed tracking webhooks back. It needs only the standard
library: Django appears only in `apps.py`, `checks.py` and the management commands (`sandbox`,
and `rundev`, which also starts the gateway's processes and so imports the gateway; the
gateway never imports the sandbox).
"""
