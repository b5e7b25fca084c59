"""Properties of validation.check_message, tried on generated input (hypothesis): a control
character in a header-bound field is refused on that field, accepted messages keep what was
sent, and no input makes validation raise anything but the gateway's own refusals."""

from __future__ import annotations

import pydantic
from django.test import SimpleTestCase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailservice.exceptions import InvalidRequest, PayloadTooLarge
from mailservice.headers import CONTROL
from mailservice.schemas import MessageIn
from mailservice.validation import check_message
from tests.mailservice.helpers import gateway_settings

PROPERTY_SETTINGS = settings(
    max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
BASE = {"to": "jane@example.com", "text": "Hi"}
# Control characters but tab, DEL, C1, and the line and paragraph separators.
controls = st.sampled_from([chr(c) for c in [*range(0, 9), *range(10, 32), *range(127, 160), 0x2028, 0x2029]])
clean_text = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=40)


@st.composite
def with_control(draw):
    """A string of clean text with at least one control character inserted."""
    text = draw(clean_text)
    position = draw(st.integers(0, len(text)))
    return text[:position] + draw(controls) + text[position:]


def fields_of(error: InvalidRequest) -> set[str | None]:
    return {e.field for e in error.errors}


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@gateway_settings()
class ValidationPropertyTests(SimpleTestCase):
    @PROPERTY_SETTINGS
    @given(subject=with_control())
    def test_control_character_in_subject_is_refused_on_subject(self, subject):
        with self.assertRaises(InvalidRequest) as caught:
            check_message(MessageIn.model_validate({**BASE, "subject": subject}))
        self.assertIn("subject", fields_of(caught.exception))

    @PROPERTY_SETTINGS
    @given(
        value=with_control(), where=st.sampled_from(["header", "name", "display", "filename", "content_id"])
    )
    def test_control_character_in_any_header_bound_field_is_refused_there(self, value, where):
        body, field = {
            "header": ({"headers": {"X-A": value}}, "headers.X-A"),
            "name": ({"headers": {f"X-{value}": "v"}}, f"headers.X-{value}"),
            "display": ({"cc": [f'"{value}" <cc@example.com>']}, "cc[0]"),
            "filename": (
                {"attachments": [{"filename": f"f{value}", "content": "aGk="}]},
                "attachments[0].filename",
            ),
            "content_id": (
                {"attachments": [{"filename": "f", "content": "aGk=", "content_id": f"c{value}"}]},
                "attachments[0].content_id",
            ),
        }[where]
        with self.assertRaises(InvalidRequest) as caught:
            check_message(MessageIn.model_validate({**BASE, **body}))
        self.assertIn(field, fields_of(caught.exception))

    @PROPERTY_SETTINGS
    @given(
        subject=clean_text.filter(lambda s: not CONTROL.search(s)),
        header=clean_text.filter(lambda s: not CONTROL.search(s)),
        tags=st.lists(st.text(alphabet="abcxyz-_", min_size=1, max_size=8), max_size=3),
        metadata=st.dictionaries(
            st.text(alphabet="abc", max_size=4), st.integers() | st.text(alphabet="xyz "), max_size=3
        ),
    )
    def test_an_accepted_message_keeps_what_was_sent(self, subject, header, tags, metadata):
        data = MessageIn.model_validate(
            {**BASE, "subject": subject, "headers": {"X-Note": header}, "tags": tags, "metadata": metadata}
        )
        draft = check_message(data)
        self.assertEqual(draft.subject, subject)
        self.assertEqual(draft.headers, {"X-Note": header})
        self.assertEqual(draft.tags, tags)
        self.assertEqual(draft.metadata, metadata)
        self.assertEqual([a.addr_spec for a in draft.to], ["jane@example.com"])

    @PROPERTY_SETTINGS
    @given(
        body=st.fixed_dictionaries(
            {},
            optional={
                "from": st.text(max_size=30),
                "to": st.text(max_size=30) | st.lists(st.text(max_size=30), max_size=3),
                "cc": st.lists(st.text(max_size=30), max_size=3),
                "reply_to": st.lists(st.text(max_size=30), max_size=2),
                "subject": st.text(max_size=30),
                "text": st.text(max_size=10),
                "template_id": st.text(max_size=10),
                "headers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
                "tags": st.lists(st.text(max_size=10), max_size=3),
                "attachments": st.lists(
                    st.fixed_dictionaries(
                        {"filename": st.text(max_size=10), "content": st.text(max_size=12)},
                        optional={
                            "mimetype": st.text(max_size=12),
                            "content_id": st.text(max_size=8),
                            "inline": st.booleans(),
                        },
                    ),
                    max_size=2,
                ),
                "metadata": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
                "merge_global_data": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
                "send_at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            },
        )
    )
    def test_no_input_raises_anything_but_a_refusal(self, body):
        try:
            data = MessageIn.model_validate(body)
        except pydantic.ValidationError:
            return  # answered 422 by the API's handler
        try:
            check_message(data)
        except (InvalidRequest, PayloadTooLarge) as err:
            self.assertTrue(err.errors)
            self.assertTrue(all(isinstance(e.message, str) and e.message for e in err.errors))
