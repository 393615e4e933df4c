"""Portal links, sessions and CSRF tokens: signed, self-contained, one-time, expiring."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import pytest

from services.ingest.portal.sessions import (
    KEY_CONTEXT,
    LINK_TTL_S,
    SESSION_TTL_S,
    PortalKeyError,
    PortalSigner,
    csrf_matches,
    portal_key,
)
from shared.ops.settings import load_settings

KEY = b"k" * 32


def test_a_link_becomes_a_session_of_its_account_once() -> None:
    signer = PortalSigner(KEY)
    link, _ = signer.link_token("acc_1")
    cookie = signer.redeem(link)
    assert cookie is not None
    session = signer.session(cookie)
    assert session is not None
    assert session.account_id == "acc_1"
    assert signer.redeem(link) is None


def test_a_used_or_expired_link_still_names_its_account_and_nothing_else_does() -> None:
    signer = PortalSigner(KEY)
    used, _ = signer.link_token("acc_1")
    signer.redeem(used)
    expired, _ = signer.link_token("acc_1", now_s=time.time() - LINK_TTL_S - 1)
    assert signer.link_account(used) == signer.link_account(expired) == "acc_1"
    cookie = PortalSigner(KEY).redeem(PortalSigner(KEY).link_token("acc_1")[0])
    assert cookie is not None
    for not_a_link in (used[:-3] + "AAA", cookie, "é", ""):
        assert signer.link_account(not_a_link) is None
    assert PortalSigner(b"o" * 32).link_account(used) is None


def test_another_replica_with_the_same_key_accepts_the_session() -> None:
    cookie = PortalSigner(KEY).redeem(PortalSigner(KEY).link_token("acc_1")[0])
    assert cookie is not None
    assert PortalSigner(KEY).session(cookie) is not None
    assert PortalSigner(b"x" * 32).session(cookie) is None


def test_an_expired_link_or_session_is_refused() -> None:
    signer = PortalSigner(KEY)
    link, _ = signer.link_token("acc_1", now_s=time.time() - LINK_TTL_S - 1)
    assert signer.redeem(link) is None
    cookie = signer.redeem(signer.link_token("acc_1")[0])
    assert signer.session(cookie, now_s=time.time() + SESSION_TTL_S + 1) is None


def test_a_link_is_not_a_session_and_a_session_is_not_a_link() -> None:
    signer = PortalSigner(KEY)
    link, _ = signer.link_token("acc_1")
    assert signer.session(link) is None
    cookie = signer.redeem(link)
    assert cookie is not None
    assert signer.redeem(cookie) is None


def test_a_tampered_token_is_refused() -> None:
    signer = PortalSigner(KEY)
    link, _ = signer.link_token("acc_1")
    payload, _, mac = link.partition(".")
    assert signer.redeem(payload[:-2] + "AA." + mac) is None
    assert signer.redeem("garbage") is None


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = PortalSigner(KEY)
    first = signer.session(signer.redeem(signer.link_token("acc_1")[0]))
    second = signer.session(signer.redeem(signer.link_token("acc_1")[0]))
    assert first is not None
    assert second is not None
    assert csrf_matches(first, first.csrf_token)
    assert not csrf_matches(first, second.csrf_token)
    assert not csrf_matches(first, None)


def test_the_key_is_the_setting_in_hex_or_base64() -> None:
    raw = secrets.token_bytes(32)
    as_hex = load_settings({"CLICKHOOK_PORTAL_KEY": raw.hex()})
    as_base64 = load_settings({"CLICKHOOK_PORTAL_KEY": base64.b64encode(raw).decode()})
    as_urlsafe = load_settings(
        {"CLICKHOOK_PORTAL_KEY": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    )
    assert portal_key(as_hex) == portal_key(as_base64) == portal_key(as_urlsafe)
    assert raw.hex() not in repr(as_hex)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "no portal key"),
        ("s3cret", "fewer than 32"),
        ("a passphrase, not a key!", "neither hex nor base64"),
        ("ab" * 31, "31 bytes, fewer than 32"),
        (base64.b64encode(b"k" * 24).decode(), "24 bytes, fewer than 32"),
        ("é" * 64, "neither hex nor base64"),
    ],
)
def test_without_32_bytes_of_key_there_is_no_portal_key(key: str, reason: str) -> None:
    with pytest.raises(PortalKeyError, match=reason):
        portal_key(load_settings({"CLICKHOOK_PORTAL_KEY": key}))


def test_the_key_is_never_derived_from_the_api_tokens() -> None:
    # Rotating a token must not end every customer's session, nor may tokens sign them.
    with pytest.raises(PortalKeyError):
        portal_key(load_settings({"CLICKHOOK_API_KEYS": "a:admin,b:publish"}))


def test_a_cookie_signed_with_the_former_built_in_key_is_refused() -> None:
    # Before, with neither setting, the key was this constant from the source.
    built_in = hashlib.sha256(KEY_CONTEXT + b"\x01").digest()
    forged = PortalSigner(built_in).redeem(PortalSigner(built_in).link_token("acc_victim")[0])
    assert forged is not None
    deployment = load_settings({"CLICKHOOK_PORTAL_KEY": secrets.token_hex(32)})
    assert PortalSigner(portal_key(deployment)).session(forged) is None


@pytest.mark.parametrize("token", ["é", "é.é", "eyJr.ü", "\x00.\x00", "ab\u2028.cd", "."])
def test_non_ascii_or_malformed_tokens_are_simply_not_valid(token: str) -> None:
    signer = PortalSigner(KEY)
    assert signer.redeem(token) is None
    assert signer.session(token) is None


def test_a_non_ascii_csrf_token_does_not_match() -> None:
    signer = PortalSigner(KEY)
    session = signer.session(signer.redeem(signer.link_token("acc_1")[0]))
    assert session is not None
    assert not csrf_matches(session, "ü" + session.csrf_token[1:])
