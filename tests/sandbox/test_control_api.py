"""The control API over HTTP (through SandboxClient) and the command line that uses it."""

import io
import json
import socket
from unittest import mock
from urllib.parse import urlsplit

import requests

from sandbox.app import Sandbox
from sandbox.cli import main
from sandbox.client import SandboxClient
from sandbox.conf import SandboxSettings
from sandbox.exceptions import ControlError
from sandbox.faults import parse_fault_flag
from tests.sandbox.base import SandboxTestCase


class ControlApiTests(SandboxTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client_ = SandboxClient(self.sandbox.control_url)

    def test_overview_lists_each_provider_with_its_api_url(self):
        """GET /_sandbox/ says where each provider listens and that it is healthy; no keys."""
        status = self.client_.status()
        self.assertEqual(status["providers"]["mailgun"]["api_url"], self.sandbox.api_url("mailgun"))
        self.assertTrue(all(p["listening"] for p in status["providers"].values()))
        self.assertNotIn(self.sandbox.settings.api_keys["sendgrid"], json.dumps(status))

    def test_setting_a_fault_over_http_changes_the_answers(self):
        """POST /_sandbox/faults/<provider> with JSON sets the fault the next send meets."""
        self.client_.set_fault("sendgrid", {"status": 502})
        self.assertEqual(self.client_.faults()["sendgrid"]["status"], 502)
        response = requests.post(self.sandbox.api_url("sendgrid") + "mail/send", data=b"{}", timeout=5)
        self.assertEqual(response.status_code, 502)

    def test_delete_clears_one_providers_fault(self):
        """DELETE /_sandbox/faults/<provider> makes it healthy; the others keep theirs."""
        self.client_.set_fault("sendgrid", {"down": True})
        self.client_.set_fault("mailgun", {"status": 503})
        self.client_.clear_fault("sendgrid")
        faults = self.client_.faults()
        self.assertEqual((faults["sendgrid"]["down"], faults["mailgun"]["status"]), (False, 503))
        self.assertTrue(self.sandbox.listeners["sendgrid"].is_open)

    def test_negative_or_garbled_content_length_is_a_400_not_a_hang(self):
        """Content-Length -1 or abc is answered 400 at once (read(-1) would wait for the client)."""
        address = ("127.0.0.1", urlsplit(self.sandbox.control_url).port)
        for value in ("-1", "abc"):
            request = f"POST /_sandbox/faults/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"
            with self.subTest(content_length=value), socket.create_connection(address, timeout=5) as conn:
                conn.sendall(request.encode())
                self.assertIn(b" 400 ", conn.recv(4096).split(b"\r\n", 1)[0] + b" ")

    def test_delete_all_faults(self):
        """DELETE /_sandbox/faults resets every provider."""
        self.client_.set_fault("mandrill", {"delay_ms": 10})
        self.client_.clear_fault()
        self.assertEqual(self.client_.faults()["mandrill"]["delay_ms"], 0)

    def test_invalid_fault_is_400_with_the_reason(self):
        """Unknown fields, wrong types and out-of-range values are refused by name."""
        for body, fragment in (
            ({"explode": True}, "Unknown fault field"),
            ({"status": 200}, "400-599"),
            ({"error_rate": 2}, "between 0 and 1"),
            ({"down": "yes"}, "'down'"),
        ):
            with self.subTest(body=body):
                with self.assertRaises(ControlError) as caught:
                    self.client_.set_fault("sendgrid", body)
                self.assertEqual(caught.exception.status, 400)
                self.assertIn(fragment, str(caught.exception))

    def test_unknown_provider_is_404(self):
        """A fault for a provider the sandbox does not serve is refused."""
        with self.assertRaises(ControlError) as caught:
            self.client_.set_fault("postmark", {"down": True})
        self.assertEqual(caught.exception.status, 404)

    def test_messages_are_listed_per_provider_and_cleared(self):
        """GET /_sandbox/messages?provider= filters; DELETE forgets them."""
        self.backend("sendgrid").send_messages([self.message(to=["a@example.net"])])
        self.backend("mailgun").send_messages([self.message(to=["b@example.net"])])
        mailgun = self.client_.messages(provider="mailgun")
        self.assertEqual([m["to"] for m in mailgun], [["b@example.net"]])
        self.assertEqual(len(self.client_.messages(recipient="A@example.net")), 1)
        self.assertEqual(self.client_.clear_messages(), 2)
        self.assertEqual(self.client_.messages(), [])

    def test_reset_restores_everything(self):
        """POST /_sandbox/reset clears faults and messages."""
        self.backend("sendgrid").send_messages([self.message()])
        self.client_.set_fault("mailgun", {"down": True})
        self.client_.reset()
        self.assertEqual((self.client_.messages(), self.client_.faults()["mailgun"]["down"]), ([], False))

    def test_provider_path_on_the_control_port_points_to_the_right_port(self):
        """Sending to the control port by mistake gets a 404 naming the provider's own URL."""
        wrong_url = self.sandbox.control_url.replace("/_sandbox/", "/sendgrid/v3/mail/send")
        response = requests.post(wrong_url, timeout=5)
        self.assertEqual(response.status_code, 404)
        self.assertIn(self.sandbox.api_url("sendgrid"), response.json()["error"])

    def test_wrong_method_is_405(self):
        """PATCH on the faults collection is not allowed."""
        response = requests.patch(self.sandbox.control_url + "faults", timeout=5)
        self.assertEqual(response.status_code, 405)

    def test_unreachable_sandbox_is_a_control_error(self):
        """The client says the sandbox is not running instead of a raw socket error."""
        with self.assertRaises(ControlError) as caught:
            SandboxClient("http://127.0.0.1:1").status()  # nothing listens on port 1
        self.assertIn("is it running", str(caught.exception))


class StoreBoundTests(SandboxTestCase):
    sandbox_options = {"max_messages": 3}

    def test_only_the_newest_messages_are_kept(self):
        """The store is bounded: the oldest records make room for new ones."""
        backend = self.backend("sendgrid")
        for index in range(5):
            backend.send_messages([self.message(subject=f"#{index}")])
        self.assertEqual([m.subject for m in self.sandbox.store.list()], ["#2", "#3", "#4"])


class CommandLineTests(SandboxTestCase):
    def run_cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main([*args, "--url", self.sandbox.control_url], out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def test_fault_down_and_clear_from_the_command_line(self):
        """`fault mailgun down` closes Mailgun's port; `fault mailgun clear` opens it again."""
        code, out, _ = self.run_cli("fault", "mailgun", "down")
        self.assertEqual((code, json.loads(out)["mailgun"]["down"]), (0, True))
        self.assertFalse(self.sandbox.listeners["mailgun"].is_open)
        self.run_cli("fault", "mailgun", "clear")
        self.assertTrue(self.sandbox.listeners["mailgun"].is_open)

    def test_status_code_shorthand(self):
        """`fault sendgrid 429 --retry-after 5` sets status 429 with Retry-After 5."""
        self.run_cli("fault", "sendgrid", "429", "--retry-after", "5")
        fault = self.sandbox.faults.get("sendgrid")
        self.assertEqual((fault.status, fault.retry_after), (429, 5))

    def test_error_rate_with_seed(self):
        """`fault sendgrid error-rate 0.3 --seed 4` sets a repeatable error rate."""
        self.run_cli("fault", "sendgrid", "error-rate", "0.3", "--seed", "4")
        fault = self.sandbox.faults.get("sendgrid")
        self.assertEqual((fault.error_rate, fault.seed, fault.error_status), (0.3, 4, 503))

    def test_slow_timeout_and_reject(self):
        """`slow MS`, `timeout [MS]` and `reject PATTERNS` map to their fault fields."""
        self.run_cli("fault", "mandrill", "slow", "250")
        self.assertEqual(self.sandbox.faults.get("mandrill").delay_ms, 250)
        self.run_cli("fault", "mandrill", "timeout", "2000")
        fault = self.sandbox.faults.get("mandrill")
        self.assertEqual((fault.timeout, fault.hold_ms), (True, 2000))
        self.run_cli("fault", "mandrill", "reject", "*@blocked.example,x@y.example")
        self.assertEqual(self.sandbox.faults.get("mandrill").reject, ("*@blocked.example", "x@y.example"))

    def test_json_fault(self):
        """`--json` sets a combined fault."""
        self.run_cli("fault", "sendgrid", "--json", '{"delay_ms": 50, "error_rate": 0.5, "seed": 1}')
        fault = self.sandbox.faults.get("sendgrid")
        self.assertEqual((fault.delay_ms, fault.error_rate), (50, 0.5))

    def test_unknown_fault_kind_exits_2(self):
        """A typo is reported, not guessed."""
        code, _, err = self.run_cli("fault", "sendgrid", "explode")
        self.assertEqual(code, 2)
        self.assertIn("Unknown fault 'explode'", err)

    def test_messages_command_prints_json(self):
        """`messages --provider sendgrid` prints the records as JSON."""
        self.backend("sendgrid").send_messages([self.message(to=["cli@example.net"])])
        code, out, _ = self.run_cli("messages", "--provider", "sendgrid")
        self.assertEqual((code, json.loads(out)[0]["to"]), (0, ["cli@example.net"]))

    def test_serving_on_a_public_address_is_refused(self):
        """`python -m sandbox --host 0.0.0.0` exits with an error: loopback only."""
        err = io.StringIO()
        # Were the check ever to let it through, serve() would block forever: fail instead.
        with mock.patch("sandbox.cli.serve", return_value=99) as serve:
            self.assertEqual(main(["--host", "0.0.0.0", "--port", "0"], out=io.StringIO(), err=err), 2)
        serve.assert_not_called()
        self.assertIn("loopback", err.getvalue())


class StartFaultTests(SandboxTestCase):
    def test_a_provider_started_down_refuses_from_the_start(self):
        """Faults given at start (--fault mailgun:down) apply before the first request."""
        provider, fault = parse_fault_flag("mailgun:down")
        sandbox = Sandbox(SandboxSettings(port=0, webhook_url=""), faults={provider: fault}).start()
        self.addCleanup(sandbox.stop)
        self.assertFalse(sandbox.listeners["mailgun"].is_open)
        # A port was chosen, to listen on again when "up".
        self.assertNotEqual(sandbox.listeners["mailgun"].port, 0)
        self.assertTrue(sandbox.listeners["sendgrid"].is_open)
