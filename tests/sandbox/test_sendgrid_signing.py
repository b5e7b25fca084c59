"""The sandbox signs SendGrid's webhooks as SendGrid does (ECDSA P-256 over timestamp + body,
base64 DER), with a development key pair whose public half `make run` gives the service."""

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import SimpleTestCase

from sandbox.conf import CONFLICTING_VARIABLES, SandboxSettings, service_environment
from sandbox.providers import sendgrid

VERIFY = ec.ECDSA(hashes.SHA256())


def load(public_key: str):
    # As Anymail loads ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY.
    pem = f"-----BEGIN PUBLIC KEY-----\n{public_key}\n-----END PUBLIC KEY-----"
    return serialization.load_pem_public_key(pem.encode())


class SendGridSigningTests(SimpleTestCase):
    def test_public_key_is_the_private_keys(self):
        """The published verification key is the public half of the development signing key."""
        private = ec.derive_private_key(sendgrid.DEV_PRIVATE_NUMBER, ec.SECP256R1())
        expected = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.assertEqual(base64.b64decode(sendgrid.DEV_VERIFICATION_KEY), expected)

    def test_signatures_verify_and_cover_timestamp_and_body(self):
        key = load(sendgrid.DEV_VERIFICATION_KEY)
        body = b'[{"event": "delivered"}]'
        for _ in range(3):  # a fresh random nonce each time
            headers = sendgrid.signature_headers(body, "1700000000")
            signature = base64.b64decode(headers[sendgrid.SIGNATURE_HEADER])
            key.verify(signature, b"1700000000" + body, VERIFY)
            with self.assertRaises(InvalidSignature):
                key.verify(signature, b"1700000001" + body, VERIFY)

    def test_the_service_environment_carries_the_verification_key(self):
        """`make run` (rundev) gives the service the public key and no longer removes it."""
        environment = service_environment(SandboxSettings())
        self.assertEqual(
            environment["ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"], sendgrid.DEV_VERIFICATION_KEY
        )
        self.assertNotIn("ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", CONFLICTING_VARIABLES)
