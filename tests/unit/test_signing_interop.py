"""Our signatures against the receivers' verifiers, tampering, stale timestamps, spec vectors.

tests/unit/test_signing.py already checks the spec's signing vector and that standardwebhooks
accepts our headers and refuses a tampered body or id. Here: the svix package (what many
receivers call), a tampered timestamp, timestamps outside the five-minute tolerance, and the
verification vectors of the Standard Webhooks reference tests run through our own ``verify``
(the receiver-side check the demo receiver uses).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from shared.model.signing import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    generate_secret,
    secret_key,
    signed_headers,
    verify,
)

BODY = b'{"type":"link.clicked","timestamp":"2026-11-27T11:00:00Z","data":{"id":"evt_1"}}'
MSG_ID = "msg_interop"
TOLERANCE_S = 300

# Vectors of the Standard Webhooks reference tests (libraries/*/tests in
# github.com/standard-webhooks/standard-webhooks): one secret, id, body and timestamp, the
# signature they give, that signature with its last byte changed, and unrelated signatures.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SPEC_WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
SPEC_OTHER_SIGNATURE = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
SPEC_V2_SIGNATURE = "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

# A verifier as a receiver runs it: True when the delivery is accepted.
Verifier = Callable[[str, dict[str, str], bytes], bool]


def standardwebhooks_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def svix_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        SvixWebhook(secret).verify(body, headers)
    except SvixVerificationError:
        return False
    return True


def ours_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    return verify(secret, headers, body, now_s=time.time())


ALL_VERIFIERS = pytest.mark.parametrize(
    "accepts",
    [standardwebhooks_accepts, svix_accepts, ours_accepts],
    ids=["standardwebhooks", "svix", "ours"],
)
# standardwebhooks on a tampered body or id is covered in test_signing.py.
OTHER_VERIFIERS = pytest.mark.parametrize(
    "accepts", [svix_accepts, ours_accepts], ids=["svix", "ours"]
)


@pytest.fixture(name="secret")
def fixture_secret() -> str:
    return generate_secret()


@pytest.fixture(name="now_s")
def fixture_now_s() -> int:
    return int(time.time())


def headers_at(secret: str, timestamp_s: int) -> dict[str, str]:
    return signed_headers([secret_key(secret)], MSG_ID, timestamp_s, BODY)


def spec_headers(signature: str = SPEC_SIGNATURE) -> dict[str, str]:
    return {
        HEADER_ID: SPEC_MSG_ID,
        HEADER_TIMESTAMP: str(SPEC_TIMESTAMP),
        HEADER_SIGNATURE: signature,
    }


# --- our deliveries through the receivers' verifiers ----------------------------------------


def test_signed_headers_verify_with_the_svix_package(secret: str, now_s: int) -> None:
    SvixWebhook(secret).verify(BODY, headers_at(secret, now_s))


def test_signed_headers_verify_with_svix_under_svix_header_names(secret: str, now_s: int) -> None:
    """Receivers built for Svix senders read ``svix-*`` first; our values work there too."""
    headers = {
        name.replace("webhook-", "svix-"): value
        for name, value in headers_at(secret, now_s).items()
    }
    SvixWebhook(secret).verify(BODY, headers)


@ALL_VERIFIERS
def test_signed_headers_verify_when_a_framework_title_cases_the_names(
    accepts: Verifier, secret: str, now_s: int
) -> None:
    headers = {name.title(): value for name, value in headers_at(secret, now_s).items()}
    assert accepts(secret, headers, BODY)


@OTHER_VERIFIERS
def test_tampered_body_fails_verification(accepts: Verifier, secret: str, now_s: int) -> None:
    assert not accepts(secret, headers_at(secret, now_s), BODY.replace(b"evt_1", b"evt_2"))


@OTHER_VERIFIERS
def test_tampered_webhook_id_fails_verification(accepts: Verifier, secret: str, now_s: int) -> None:
    headers = {**headers_at(secret, now_s), HEADER_ID: "msg_other"}
    assert not accepts(secret, headers, BODY)


@ALL_VERIFIERS
def test_tampered_timestamp_fails_verification(accepts: Verifier, secret: str, now_s: int) -> None:
    headers = {**headers_at(secret, now_s), HEADER_TIMESTAMP: str(now_s - 1)}
    assert not accepts(secret, headers, BODY)


@ALL_VERIFIERS
def test_signature_more_than_five_minutes_old_fails_verification(
    accepts: Verifier, secret: str, now_s: int
) -> None:
    assert not accepts(secret, headers_at(secret, now_s - TOLERANCE_S - 5), BODY)


@ALL_VERIFIERS
def test_signature_more_than_five_minutes_ahead_fails_verification(
    accepts: Verifier, secret: str, now_s: int
) -> None:
    assert not accepts(secret, headers_at(secret, now_s + TOLERANCE_S + 5), BODY)


@ALL_VERIFIERS
def test_signature_four_minutes_old_still_verifies(
    accepts: Verifier, secret: str, now_s: int
) -> None:
    assert accepts(secret, headers_at(secret, now_s - 240), BODY)


@ALL_VERIFIERS
def test_signature_under_another_secret_fails_verification(
    accepts: Verifier, secret: str, now_s: int
) -> None:
    assert not accepts(generate_secret(), headers_at(secret, now_s), BODY)


# --- the reference vectors through our receiver-side verify ---------------------------------


def test_verify_accepts_the_specification_vector_at_its_time() -> None:
    assert verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_accepts_the_specification_secret_without_its_prefix() -> None:
    secret = SPEC_SECRET.removeprefix("whsec_")
    assert verify(secret, spec_headers(), SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_refuses_the_specification_signature_with_one_byte_changed() -> None:
    headers = spec_headers(SPEC_WRONG_SIGNATURE)
    assert not verify(SPEC_SECRET, headers, SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_accepts_the_specification_multi_signature_header() -> None:
    """Unknown versions and non-matching v1 entries around the valid one are skipped."""
    header = " ".join(
        [SPEC_OTHER_SIGNATURE, SPEC_V2_SIGNATURE, SPEC_SIGNATURE, SPEC_OTHER_SIGNATURE]
    )
    assert verify(SPEC_SECRET, spec_headers(header), SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_refuses_a_valid_signature_labelled_with_another_version() -> None:
    headers = spec_headers(SPEC_SIGNATURE.replace("v1,", "v2,"))
    assert not verify(SPEC_SECRET, headers, SPEC_BODY, now_s=SPEC_TIMESTAMP)


@pytest.mark.parametrize("missing", [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE])
def test_verify_refuses_the_specification_vector_missing_a_header(missing: str) -> None:
    headers = {name: value for name, value in spec_headers().items() if name != missing}
    assert not verify(SPEC_SECRET, headers, SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_refuses_a_non_numeric_timestamp() -> None:
    headers = {**spec_headers(), HEADER_TIMESTAMP: "hello"}
    assert not verify(SPEC_SECRET, headers, SPEC_BODY, now_s=SPEC_TIMESTAMP)


def test_verify_refuses_the_specification_vector_five_minutes_and_a_second_later() -> None:
    later_s = SPEC_TIMESTAMP + TOLERANCE_S + 1
    assert not verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now_s=later_s)
