"""Bearer-token parsing and timing-safe comparison of the ingest Authenticator."""

from __future__ import annotations

import contextlib
import hmac

import pytest
from aiohttp.test_utils import make_mocked_request

from services.ingest.auth import Authenticator
from services.ingest.responses import ApiError
from shared.ops.settings import ApiKey

KEYS = (
    ApiKey(token="tok-first", scope="publish"),
    ApiKey(token="tok-second", scope="account:acc_a"),
    ApiKey(token="tok-third", scope="admin"),
)


@pytest.fixture(name="authenticator")
def fixture_authenticator() -> Authenticator:
    return Authenticator(KEYS)


@pytest.fixture(name="comparisons")
def fixture_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    """Every ``hmac.compare_digest`` call, recorded; the real comparison still decides."""
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def scope_for(authenticator: Authenticator, header: str) -> str:
    request = make_mocked_request("GET", "/v1/endpoints", headers={"authorization": header})
    return authenticator.authenticate(request).scope


@pytest.mark.parametrize("token", ["tok-first", "tok-second", "tok-third", "tok-unknown"])
def test_every_key_is_compared_whichever_matches(
    authenticator: Authenticator, comparisons: list[tuple[object, object]], token: str
) -> None:
    with contextlib.suppress(ApiError):
        scope_for(authenticator, f"Bearer {token}")

    assert [candidate for candidate, _ in comparisons] == [k.token.encode() for k in KEYS]


def test_presented_token_is_compared_as_bytes_with_compare_digest(
    authenticator: Authenticator, comparisons: list[tuple[object, object]]
) -> None:
    scope_for(authenticator, "Bearer tok-second")

    assert {presented for _, presented in comparisons} == {b"tok-second"}


def test_the_matching_keys_scope_is_returned(authenticator: Authenticator) -> None:
    assert scope_for(authenticator, "Bearer tok-second") == "account:acc_a"


@pytest.mark.parametrize(
    "header",
    ["bearer tok-third", "BEARER tok-third", "Bearer   tok-third", "Bearer tok-third  "],
    ids=["lowercase-scheme", "uppercase-scheme", "extra-spaces", "trailing-spaces"],
)
def test_bearer_scheme_is_case_insensitive_and_extra_spaces_are_ignored(
    authenticator: Authenticator, header: str
) -> None:
    assert scope_for(authenticator, header) == "admin"


@pytest.mark.parametrize(
    "header",
    [
        "Bearertok-third",
        "Bearer ",
        "Bearer",
        "",
        "Bearer tok-third extra",
        "Bearer tok-thir",
        "Bearer tok-thirdx",
        "Bearer TOK-THIRD",
        "Token tok-third",
        "Basic dG9rLXRoaXJkOg==",
        "Bearer tök-third",
    ],
    ids=[
        "no-space",
        "empty-token",
        "scheme-only",
        "empty-header",
        "trailing-word",
        "token-prefix",
        "token-suffix",
        "token-case-changed",
        "other-scheme",
        "basic",
        "non-ascii",
    ],
)
def test_malformed_or_near_miss_bearer_header_is_a_401(
    authenticator: Authenticator, header: str
) -> None:
    with pytest.raises(ApiError) as refused:
        scope_for(authenticator, header)

    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
