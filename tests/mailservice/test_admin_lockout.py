"""The admin's login lockout behind a reverse proxy (docs/security.md, "The admin"): failures are
counted per account and per real client address, and the client's address is taken from
X-Forwarded-For only when a proxy in TRUSTED_PROXIES sent the request."""

from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, SimpleTestCase, TestCase, override_settings

from smtest.environment import trusted_proxies
from smtest.proxies import client_ip
from tests.mailservice.helpers import GatewayMixin, gateway_settings

PROXY = "127.0.0.1"
ADMIN_ADDRESS = "203.0.113.10"
ATTACKER_ADDRESS = "198.51.100.66"


class ClientAddressTests(SimpleTestCase):
    """smtest.proxies.client_ip, django-axes' AXES_CLIENT_IP_CALLABLE."""

    def address(self, remote: str, forwarded: str | None = None, *, proxies: list[str]) -> str | None:
        headers = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
        request = RequestFactory().get("/admin/login/", REMOTE_ADDR=remote, **headers)
        with override_settings(TRUSTED_PROXIES=proxies):
            return client_ip(request)

    def test_without_trusted_proxies_the_header_is_ignored(self):
        """By default X-Forwarded-For counts for nothing: any client can send it."""
        self.assertEqual(self.address(ATTACKER_ADDRESS, ADMIN_ADDRESS, proxies=[]), ATTACKER_ADDRESS)

    def test_a_peer_that_is_not_a_trusted_proxy_cannot_forge_an_address(self):
        """A forged header from a peer outside TRUSTED_PROXIES is ignored."""
        self.assertEqual(self.address(ATTACKER_ADDRESS, ADMIN_ADDRESS, proxies=[PROXY]), ATTACKER_ADDRESS)

    def test_a_trusted_proxy_names_the_client(self):
        """From a trusted proxy, the address it appended is the client's."""
        self.assertEqual(self.address(PROXY, ADMIN_ADDRESS, proxies=[PROXY]), ADMIN_ADDRESS)

    def test_what_the_client_wrote_before_the_proxy_is_ignored(self):
        """The right-most untrusted address wins: entries left of it came from the client."""
        forwarded = (
            f"{ADMIN_ADDRESS}, {ATTACKER_ADDRESS}"  # the client sent the first, nginx appended the second
        )
        self.assertEqual(self.address(PROXY, forwarded, proxies=[PROXY]), ATTACKER_ADDRESS)

    def test_a_chain_of_trusted_proxies_is_walked_through(self):
        """A load balancer in front of the local proxy: trusted hops (by network) are skipped."""
        forwarded = f"192.0.2.1, {ADMIN_ADDRESS}, 10.0.3.7"
        self.assertEqual(self.address(PROXY, forwarded, proxies=[PROXY, "10.0.0.0/8"]), ADMIN_ADDRESS)

    def test_a_trusted_proxy_without_the_header_is_the_client(self):
        """No X-Forwarded-For (a probe on the proxy host): the proxy's own address."""
        self.assertEqual(self.address(PROXY, None, proxies=[PROXY]), PROXY)

    def test_an_entry_that_is_no_address_ends_the_walk(self):
        """Garbage in the header is not believed, nor anything left of it."""
        forwarded = f"{ADMIN_ADDRESS}, unknown, 10.0.3.7"
        self.assertEqual(self.address(PROXY, forwarded, proxies=[PROXY, "10.0.0.0/8"]), "10.0.3.7")

    def test_ports_brackets_and_mapped_addresses_are_read(self):
        """`addr:port`, `[v6]:port` and IPv4-mapped IPv6 addresses name the same client."""
        self.assertEqual(self.address(PROXY, f"{ADMIN_ADDRESS}:51234", proxies=[PROXY]), ADMIN_ADDRESS)
        self.assertEqual(self.address(PROXY, "[2001:db8::7]:443", proxies=[PROXY]), "2001:db8::7")
        self.assertEqual(self.address("::ffff:127.0.0.1", ADMIN_ADDRESS, proxies=[PROXY]), ADMIN_ADDRESS)


class TrustedProxiesSettingTests(SimpleTestCase):
    def test_addresses_and_networks_are_normalized(self):
        """TRUSTED_PROXIES takes addresses and networks, stored as networks."""
        self.assertEqual(
            trusted_proxies(["127.0.0.1", " ::1", "10.1.2.3/8"]), ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]
        )

    def test_a_typo_stops_startup_naming_the_setting(self):
        """Anything that is not an address or a network is refused, naming TRUSTED_PROXIES."""
        with self.assertRaisesMessage(ImproperlyConfigured, "TRUSTED_PROXIES holds 'proxy.internal'"):
            trusted_proxies(["127.0.0.1", "proxy.internal"])


@gateway_settings(AXES_FAILURE_LIMIT=3, AXES_COOLOFF_TIME=1.0, TRUSTED_PROXIES=[PROXY])
class LockoutBehindProxyTests(GatewayMixin, TestCase):
    """The project's lockout parameters (per account and per address) through the test client."""

    def setUp(self):
        super().setUp()
        get_user_model().objects.create_superuser("admin", "admin@example.com", "right-password")

    def login(self, username: str, password: str, *, remote: str, forwarded: str | None = None) -> int:
        headers = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
        self.client.logout()
        response = self.client.post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password, "next": "/admin/"},
            REMOTE_ADDR=remote,
            **headers,
        )
        return response.status_code

    def test_an_attacker_behind_the_proxy_does_not_lock_out_the_admin(self):
        """Failures through the trusted proxy count against the attacker's own address only."""
        for username in ("root", "guest", "test"):
            self.login(username, "wrong", remote=PROXY, forwarded=f"{ADMIN_ADDRESS}, {ATTACKER_ADDRESS}")
        self.assertEqual(self.login("someone", "wrong", remote=PROXY, forwarded=ATTACKER_ADDRESS), 429)
        self.assertEqual(self.login("admin", "right-password", remote=PROXY, forwarded=ADMIN_ADDRESS), 302)
        self.assertEqual(set(AccessAttempt.objects.values_list("ip_address", flat=True)), {ATTACKER_ADDRESS})

    def test_a_forged_header_from_an_untrusted_peer_is_ignored(self):
        """A direct client claiming the admin's address is counted, and locked, at its own."""
        for username in ("root", "guest", "test"):
            self.login(username, "wrong", remote=ATTACKER_ADDRESS, forwarded=ADMIN_ADDRESS)
        self.assertEqual(
            self.login("someone", "wrong", remote=ATTACKER_ADDRESS, forwarded=ADMIN_ADDRESS), 429
        )
        self.assertEqual(self.login("admin", "right-password", remote=ADMIN_ADDRESS), 302)
        self.assertFalse(AccessAttempt.objects.filter(ip_address=ADMIN_ADDRESS).exists())

    def test_an_account_is_locked_across_addresses(self):
        """Failures on one account from several addresses add up: spreading them does not help."""
        for n in range(2):
            self.assertEqual(self.login("admin", "wrong", remote=f"192.0.2.{n + 1}"), 200)
        self.assertEqual(self.login("admin", "wrong", remote="192.0.2.3"), 429)  # the limit
        # A fourth address, never seen before, even with the right password; through the proxy too.
        self.assertEqual(self.login("admin", "right-password", remote="192.0.2.99"), 429)
        self.assertEqual(self.login("admin", "right-password", remote=PROXY, forwarded=ADMIN_ADDRESS), 429)

    def test_an_address_is_locked_across_accounts(self):
        """Failures from one address on several accounts add up too."""
        for username in ("root", "guest", "test"):
            self.login(username, "wrong", remote=PROXY, forwarded=ATTACKER_ADDRESS)
        self.assertEqual(self.login("admin", "right-password", remote=PROXY, forwarded=ATTACKER_ADDRESS), 429)

    @override_settings(TRUSTED_PROXIES=[])
    def test_without_trusted_proxies_everyone_behind_the_proxy_shares_its_address(self):
        """Unset TRUSTED_PROXIES behind a proxy: the proxy's address is every client's (why to set it)."""
        for username in ("root", "guest", "test"):
            self.login(username, "wrong", remote=PROXY, forwarded=ATTACKER_ADDRESS)
        self.assertEqual(self.login("admin", "right-password", remote=PROXY, forwarded=ADMIN_ADDRESS), 429)
