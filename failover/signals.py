"""Signals sent by the failover backend; `sender` is the backend class.

- provider_attempted(provider, message, attempt): after every try of one provider.
- provider_failed(provider, error, attempt): a provider not known to be failing just failed.
- provider_recovered(provider): a provider remembered as failing took a message again.
- failover(message, from_provider, to_provider, reason): a message was sent by another provider
  than the one it would have gone to first; `reason` is why it left that one: provider_error,
  ambiguous, local_error, retry_after or rate_limited.
"""

from django.dispatch import Signal

provider_attempted = Signal()
provider_failed = Signal()
provider_recovered = Signal()
failover = Signal()
