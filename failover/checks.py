"""System checks: a broken chain is reported by `manage.py check`, not by the first lost email."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from failover import conf
from failover.exceptions import FailoverConfigurationError, ProviderBuildError
from failover.providers import load_providers

PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "keeps the memory in one process only",
    "django.core.cache.backends.dummy.DummyCache": "remembers nothing",
}


@register(Tags.compatibility)
def check_provider_chain(app_configs=None, **kwargs):
    if not conf.is_used_by_project():
        return []
    try:
        providers = load_providers()
    except FailoverConfigurationError as err:
        return [Error(str(err), hint="Set FIRST_WORKING_EMAIL_BACKENDS in settings.", id="failover.E001")]
    problems = []
    for index, provider in enumerate(providers):
        try:
            import_string(provider.backend_path)
        except ImportError as err:
            problems.append(
                Error(
                    f"FIRST_WORKING_EMAIL_BACKENDS[{index}] ({provider.name!r}): cannot import "
                    f"{provider.backend_path!r}: {err}",
                    hint="Check the dotted path, or install the package that provides it.",
                    id="failover.E002",
                )
            )
            continue
        try:
            # Building a backend checks its settings (Anymail raises for a missing API key)
            # without opening a connection, so a wrong option is found now, not at a send.
            provider.build(conf.timeouts())
        except ProviderBuildError as err:
            problems.append(
                Error(
                    f"FIRST_WORKING_EMAIL_BACKENDS[{index}] ({provider.name!r}) cannot be built: "
                    f"{err.reason}",
                    hint="Set the provider's settings (e.g. its ANYMAIL_<ESP>_API_KEY) or fix its OPTIONS.",
                    id="failover.E004",
                )
            )
    return problems


@register(Tags.caches)
def check_shared_cache(app_configs=None, **kwargs):
    if not conf.is_used_by_project():
        return []
    alias = conf.cache_alias()
    if alias not in settings.CACHES:
        return [
            Error(
                f"FIRST_WORKING_EMAIL_CACHE is {alias!r}, which is not in CACHES.",
                hint="Name a configured cache alias.",
                id="failover.E003",
            )
        ]
    backend = settings.CACHES[alias].get("BACKEND", "")
    if backend in PER_PROCESS_CACHES:
        return [
            Warning(
                f"The failover memory uses cache {alias!r} ({backend}), which "
                f"{PER_PROCESS_CACHES[backend]}: when more than one process sends (web workers, "
                "task workers), each one rediscovers a dead provider by itself.",
                hint="Use a cache every process shares (Redis, Memcached, the database or file "
                "cache). A single-process deployment may silence failover.W001.",
                id="failover.W001",
            )
        ]
    return []
