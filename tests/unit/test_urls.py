"""Endpoint URL policy (no resolution: addresses are checked again at connect time)."""

from __future__ import annotations

import ipaddress

import pytest

from services.ingest.urls import MAX_URL_CHARS, url_problems


def _problems(raw: str, *, allow_http: bool = False, allowed: tuple[str, ...] = ()) -> list[str]:
    return url_problems(
        raw, allow_http=allow_http, allowed=tuple(ipaddress.ip_network(n) for n in allowed)
    )


@pytest.mark.parametrize(
    "raw",
    [
        "https://hooks.example.com/in",
        "https://hooks.example.com:8443/in?token=abc",
        "HTTPS://hooks.example.com/in",
        "https://短.be/hook",
        "https://8.8.8.8/in",
        "https://[2606:4700::1111]/in",
    ],
)
def test_url_problems_accepts_public_https_urls(raw: str) -> None:
    assert _problems(raw) == []


def test_url_problems_refuses_http_unless_allowed() -> None:
    assert _problems("http://hooks.example.com/in") == ["must use https"]
    assert _problems("http://hooks.example.com/in", allow_http=True) == []


def test_url_problems_names_both_schemes_when_http_is_allowed() -> None:
    assert _problems("ftp://hooks.example.com/in", allow_http=True) == ["must use http or https"]


def test_url_problems_needs_a_scheme_and_host() -> None:
    assert _problems("hooks.example.com/in") == ["must use https", "needs a host"]


@pytest.mark.parametrize(
    "raw", ["https://user:pw@hooks.example.com/in", "https://user@hooks.example.com/in"]
)
def test_url_problems_refuses_credentials(raw: str) -> None:
    assert _problems(raw) == ["must not contain a user name or password"]


def test_url_problems_refuses_a_fragment() -> None:
    assert _problems("https://hooks.example.com/in#part") == ["must not contain a fragment"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("https://10.0.0.1/in", "points to a private address"),
        ("https://127.0.0.1:8080/in", "points to a loopback address"),
        ("https://169.254.169.254/latest/meta-data", "points to a link_local address"),
        ("https://[::1]/in", "points to a loopback address"),
        ("https://[::ffff:127.0.0.1]/in", "points to a loopback address"),
        ("https://[fe80::1%25eth0]/in", "points to a link_local address"),
        ("https://100.64.1.1/in", "points to a reserved address"),
    ],
)
def test_url_problems_refuses_literal_non_public_addresses(raw: str, problem: str) -> None:
    assert _problems(raw) == [problem]


def test_url_problems_allows_literal_addresses_inside_allowed_cidrs() -> None:
    assert _problems("https://10.0.0.1/in", allowed=("10.0.0.0/8",)) == []


def test_url_problems_reports_every_problem_at_once() -> None:
    assert _problems("http://user@10.0.0.1/in#x") == [
        "must use https",
        "must not contain a user name or password",
        "must not contain a fragment",
        "points to a private address",
    ]


def test_url_problems_accepts_a_url_of_the_maximum_length() -> None:
    base = "https://hooks.example.com/"
    assert _problems(base + "a" * (MAX_URL_CHARS - len(base))) == []


def test_url_problems_refuses_a_longer_url_with_that_problem_only() -> None:
    base = "http://10.0.0.1/"
    assert _problems(base + "a" * (MAX_URL_CHARS + 1 - len(base))) == [
        "is longer than 2048 characters"
    ]


def test_url_problems_refuses_what_is_not_a_url() -> None:
    problems = _problems("https://[::1/in")
    assert len(problems) == 1
    assert problems[0].startswith("is not a URL: ")
