"""Portal links, sessions and CSRF tokens: signed, self-contained, one-time, expiring."""

from __future__ import annotations

import time

from services.ingest.portal.sessions import (
    LINK_TTL_S,
    SESSION_TTL_S,
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


def test_the_key_comes_from_the_setting_or_else_from_the_api_keys() -> None:
    with_setting = load_settings(
        {"CLICKHOOK_PORTAL_KEY": "s3cret", "CLICKHOOK_API_KEYS": "a:admin"}
    )
    derived = load_settings({"CLICKHOOK_API_KEYS": "a:admin,b:publish"})
    reordered = load_settings({"CLICKHOOK_API_KEYS": "b:publish,a:admin"})
    assert portal_key(with_setting) != portal_key(derived)
    assert portal_key(derived) == portal_key(reordered)
    assert "s3cret" not in repr(with_setting)
