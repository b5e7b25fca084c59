"""Signals sent by the failover backend; `sender` is the backend class.

- provider_attempted(provider, message, attempt): after every try of one provider.
- provider_failed(provider, error, attempt): a provider not known to be failing just failed.
- provider_recovered(provider): a provider remembered as failing took a message again.
"""
from django.dispatch import Signal

provider_attempted = Signal()
provider_failed = Signal()
provider_recovered = Signal()
