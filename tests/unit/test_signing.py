"""Standard Webhooks signing, checked against the reference verifier and a hand-made HMAC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.model.signing import (
    HEADER_DUB_SIGNATURE,
    HEADER_GITHUB_SIGNATURE,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    dub_signature,
    generate_secret,
    github_signature,
    is_valid_secret,
    secret_key,
    sign,
    signature_header,
    signed_headers,
    style_headers,
    webhook_id,
)

BODY = b'{"type":"link.clicked","data":{"id":"evt_1","link":{"domain":"\xe7\x9f\xad.be"}}}'
MSG_ID = "msg_test"

# The Standard Webhooks / Svix reference test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture(name="secret")
def fixture_secret() -> str:
    return generate_secret()


@pytest.fixture(name="old_secret")
def fixture_old_secret() -> str:
    return generate_secret()


@pytest.fixture(name="now_s")
def fixture_now_s() -> int:
    """The reference verifier refuses timestamps more than five minutes from now."""
    return int(time.time())


def test_generate_secret_is_prefixed_base64_of_32_bytes(secret: str) -> None:
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_generate_secret_differs_on_each_call(secret: str, old_secret: str) -> None:
    assert secret != old_secret


def test_generated_secrets_are_valid(secret: str) -> None:
    assert is_valid_secret(secret)


@pytest.mark.parametrize("size", [24, 32, 64])
def test_is_valid_secret_accepts_24_to_64_bytes(size: int) -> None:
    assert is_valid_secret("whsec_" + base64.b64encode(bytes(size)).decode())


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(bytes(23)).decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        base64.b64encode(bytes(32)).decode(),
        "whsec_" + base64.b64encode(bytes(32)).decode().rstrip("="),
        "whsec_not base64 at all!",
        "whsec_",
    ],
    ids=["23-bytes", "65-bytes", "no-prefix", "unpadded", "not-base64", "empty"],
)
def test_is_valid_secret_refuses_malformed_secrets(secret: str) -> None:
    assert not is_valid_secret(secret)


def test_secret_key_decodes_the_base64_after_the_prefix() -> None:
    raw = bytes(range(32))
    assert secret_key("whsec_" + base64.b64encode(raw).decode()) == raw


def test_secret_key_rejects_invalid_base64() -> None:
    with pytest.raises(binascii.Error):
        secret_key("whsec_not base64!")


def test_sign_matches_the_specification_test_vector() -> None:
    signature = sign(secret_key(SPEC_SECRET), SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert signature == SPEC_SIGNATURE


def test_sign_matches_a_hand_computed_hmac(secret: str) -> None:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    to_sign = MSG_ID.encode() + b"." + b"1700000000" + b"." + BODY
    expected = "v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    assert sign(secret_key(secret), MSG_ID, 1_700_000_000, BODY) == expected


def test_signed_headers_verify_with_the_reference_library(secret: str, now_s: int) -> None:
    headers = signed_headers([secret_key(secret)], MSG_ID, now_s, BODY)
    payload = Webhook(secret).verify(BODY, headers)
    assert payload == {"type": "link.clicked", "data": {"id": "evt_1", "link": {"domain": "短.be"}}}


def test_signed_headers_carry_id_timestamp_and_content_type(secret: str) -> None:
    headers = signed_headers([secret_key(secret)], MSG_ID, 1_700_000_000, BODY)
    assert headers[HEADER_ID] == MSG_ID
    assert headers[HEADER_TIMESTAMP] == "1700000000"
    assert headers[HEADER_SIGNATURE] == sign(secret_key(secret), MSG_ID, 1_700_000_000, BODY)
    assert headers["content-type"] == "application/json"


def test_signature_header_has_one_signature_per_key_space_separated(
    secret: str, old_secret: str
) -> None:
    keys = [secret_key(secret), secret_key(old_secret)]
    header = signature_header(keys, MSG_ID, 1_700_000_000, BODY)
    assert header.split(" ") == [sign(key, MSG_ID, 1_700_000_000, BODY) for key in keys]


def test_rotated_signatures_verify_with_each_secret_alone(
    secret: str, old_secret: str, now_s: int
) -> None:
    keys = [secret_key(secret), secret_key(old_secret)]
    headers = signed_headers(keys, MSG_ID, now_s, BODY)
    for each in (secret, old_secret):
        Webhook(each).verify(BODY, headers, json_parse=False)


def test_rotated_signatures_do_not_verify_with_a_third_secret(
    secret: str, old_secret: str, now_s: int
) -> None:
    headers = signed_headers([secret_key(secret), secret_key(old_secret)], MSG_ID, now_s, BODY)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(generate_secret()).verify(BODY, headers)


def test_signature_does_not_verify_a_tampered_body(secret: str, now_s: int) -> None:
    headers = signed_headers([secret_key(secret)], MSG_ID, now_s, BODY)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY.replace(b"evt_1", b"evt_2"), headers)


def test_signature_does_not_verify_under_another_webhook_id(secret: str, now_s: int) -> None:
    headers = signed_headers([secret_key(secret)], MSG_ID, now_s, BODY)
    headers[HEADER_ID] = "msg_other"
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY, headers)


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    msg_id=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    body=st.text(),
)
def test_any_signature_verifies_with_the_reference_library(
    key: bytes, msg_id: str, body: str
) -> None:
    now_s = int(time.time())
    headers = signed_headers([key], msg_id, now_s, body.encode())
    Webhook(key).verify(body.encode(), headers, json_parse=False)


def test_webhook_id_is_msg_prefix_and_base32_of_the_pair_digest() -> None:
    digest = hashlib.sha256(b"evt_1\x00ep_1").digest()[:15]
    expected = "msg_" + base64.b32encode(digest).decode().lower()
    assert webhook_id("evt_1", "ep_1") == expected
    assert len(expected) == len("msg_") + 24


def test_webhook_id_is_stable_for_one_event_and_endpoint() -> None:
    assert webhook_id("evt_1", "ep_1") == webhook_id("evt_1", "ep_1")


def test_webhook_id_differs_between_endpoints_of_one_event() -> None:
    assert webhook_id("evt_1", "ep_1") != webhook_id("evt_1", "ep_2")


def test_webhook_id_does_not_merge_the_pair_by_concatenation() -> None:
    assert webhook_id("evt_1", "ep_1") != webhook_id("evt_1ep_", "1")


# GitHub's published example ("Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def hex_hmac(secret: str, body: bytes) -> str:
    """What a GitHub- or Dub-style receiver computes: the secret as typed is the key."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def test_github_signature_matches_githubs_published_example() -> None:
    assert github_signature(GITHUB_SECRET, GITHUB_PAYLOAD) == GITHUB_SIGNATURE


@settings(max_examples=50)
@given(body=st.binary(max_size=2000))
def test_github_and_dub_signatures_verify_with_an_independent_hmac(body: bytes) -> None:
    secret = generate_secret()

    assert github_signature(secret, body) == "sha256=" + hex_hmac(secret, body)
    assert dub_signature(secret, body) == hex_hmac(secret, body)


def test_github_and_dub_signatures_use_the_whole_secret_string_not_its_decoded_bytes(
    secret: str,
) -> None:
    decoded_key = hmac.new(secret_key(secret), BODY, hashlib.sha256).hexdigest()

    assert dub_signature(secret, BODY) != decoded_key
    assert github_signature(secret, BODY) != "sha256=" + decoded_key


def test_style_headers_holds_only_the_styles_asked_for(secret: str) -> None:
    assert style_headers([], secret, BODY) == {}
    assert style_headers(["dub"], secret, BODY) == {HEADER_DUB_SIGNATURE: hex_hmac(secret, BODY)}
    assert style_headers(["github", "dub"], secret, BODY) == {
        HEADER_GITHUB_SIGNATURE: "sha256=" + hex_hmac(secret, BODY),
        HEADER_DUB_SIGNATURE: hex_hmac(secret, BODY),
    }
