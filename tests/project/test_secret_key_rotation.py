"""SECRET_KEY rotated without logging the admins out (docs/deployment.md, "Rotation without
downtime"): SECRET_KEY_FALLBACKS from the environment keeps what the old key signed valid."""

from django.contrib.auth import get_user_model
from django.test import SimpleTestCase, TestCase, override_settings

from tests.project.child_settings import setting_in_child

OLD_KEY = "old-" + "o" * 60
NEW_KEY = "new-" + "n" * 60


class SecretKeyFallbacksSettingTests(SimpleTestCase):
    def test_fallbacks_are_read_comma_separated(self):
        """SECRET_KEY_FALLBACKS='a, b,' gives Django ["a", "b"], and nothing when unset."""
        for value, expected in ((f"{OLD_KEY}, second-old-key,", [OLD_KEY, "second-old-key"]), ("", [])):
            with self.subTest(value=value):
                fallbacks = setting_in_child(
                    "SECRET_KEY_FALLBACKS", DEBUG="0", SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=value
                )
                self.assertEqual(fallbacks, expected)


class SecretKeyRotationTests(TestCase):
    def setUp(self):
        self.admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "a-long-password-1")
        with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
            self.client.force_login(self.admin)

    def test_an_admin_session_survives_a_new_key_with_the_old_one_as_fallback(self):
        """With the old key in SECRET_KEY_FALLBACKS, a session signed by it still opens the admin."""
        with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
            self.assertEqual(self.client.get("/admin/").status_code, 200)

    def test_without_the_fallback_the_old_session_ends(self):
        """Once the old key leaves SECRET_KEY_FALLBACKS, its sessions send the admin to the login page."""
        with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
            response = self.client.get("/admin/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])
