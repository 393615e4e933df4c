"""Payload templates through the ingest API and the portal, in process: checked at create and
PATCH, previewed (the API route, and the portal's edit page as you type)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from shared.kafka.service_base import ServiceBase
from tests.integration.conftest import ACCOUNT_A, ACCOUNT_B, auth
from tests.integration.test_portal_access import open_portal

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
TEMPLATE = '{"text": {{ "Click on " | append: link.key | json }}, "tags": {{ link.tags | json }}}'
HUGE_LOOP = "{% for i in (1..100000000) %}{% endfor %}{}"


async def create(ingest: Client, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"url": "https://hooks.example.com/x", **fields}
    response = await ingest.post("/v1/endpoints", json=body, headers=auth(ACCOUNT_A))
    shown: dict[str, Any] = await response.json()
    return response.status, shown


async def patch(ingest: Client, endpoint_id: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    response = await ingest.patch(
        f"/v1/endpoints/{endpoint_id}", json=fields, headers=auth(ACCOUNT_A)
    )
    shown: dict[str, Any] = await response.json()
    return response.status, shown


async def preview(
    ingest: Client, endpoint_id: str, body: dict[str, Any] | None = None, token: str = ACCOUNT_A
) -> tuple[int, dict[str, Any]]:
    response = await ingest.post(
        f"/v1/endpoints/{endpoint_id}/preview", json=body, headers=auth(token)
    )
    shown: dict[str, Any] = await response.json()
    return response.status, shown


def problems(shown: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["field"], d["problem"]) for d in shown["error"]["details"]]


async def test_a_template_endpoint_is_stored_and_shown(ingest: Client, base: ServiceBase) -> None:
    status, shown = await create(ingest, format="template", template=TEMPLATE)
    stored = base.endpoints.table.get(shown["id"])

    assert status == 201
    assert (shown["format"], shown["template"]) == ("template", TEMPLATE)
    assert stored is not None
    assert stored.template == TEMPLATE


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"format": "template"}, 'is required with format "template"'),
        ({"template": TEMPLATE}, 'is used only with format "template"'),
        ({"format": "template", "template": "{{ link.key }}"}, "the body is not valid JSON"),
        ({"format": "template", "template": "{\n{% if %}\n}"}, "line 2:"),
        ({"format": "template", "template": HUGE_LOOP}, "loop limit"),
        ({"format": "template", "template": "{% include 'x' %}"}, "include tag"),
    ],
)
async def test_an_unusable_template_is_a_422_naming_the_problem(
    ingest: Client, fields: dict[str, Any], problem: str
) -> None:
    status, shown = await create(ingest, **fields)

    assert status == 422
    [(field, text)] = problems(shown)
    assert field == "template"
    assert problem in text


async def test_a_template_longer_than_the_limit_is_a_422(ingest: Client) -> None:
    status, shown = await create(ingest, format="template", template="1" * (16 * 1024 + 1))

    assert status == 422
    assert problems(shown)[0][0] == "template"


async def test_patch_checks_the_template_and_the_format_together(ingest: Client) -> None:
    _, created = await create(ingest)

    status, shown = await patch(ingest, created["id"], format="template")
    assert (status, problems(shown)[0][0]) == (422, "template")
    status, shown = await patch(ingest, created["id"], format="template", template=HUGE_LOOP)
    assert status == 422
    assert "loop limit" in problems(shown)[0][1]
    status, shown = await patch(ingest, created["id"], format="template", template=TEMPLATE)
    assert (status, shown["template"]) == (200, TEMPLATE)
    # A format change keeps the template, unused; template: null with it is refused.
    status, shown = await patch(ingest, created["id"], format="slack")
    assert (status, shown["template"]) == (200, TEMPLATE)
    status, shown = await patch(ingest, created["id"], format="template", template=None)
    assert status == 422


async def test_preview_renders_a_sample_click_signed_with_the_endpoints_secret(
    ingest: Client,
) -> None:
    _, created = await create(
        ingest, format="template", template=TEMPLATE, headers={"Authorization": "Bearer x"}
    )

    status, shown = await preview(ingest, created["id"])

    assert status == 200
    body = shown["body"]
    assert Webhook(created["secret"]).verify(body, shown["headers"]) == {
        "text": "Click on clickhook-test",
        "tags": ["test"],
    }
    assert shown["headers"]["Authorization"] == "••••"
    assert shown["event"]["link"]["id"] == "lnk_clickhook_test"


async def test_preview_renders_a_given_click_with_an_unsaved_template(ingest: Client) -> None:
    _, created = await create(ingest)
    event = {
        "type": "link.clicked",
        "occurred_at": "2026-11-27T11:00:00Z",
        "account_id": "acc_a",
        "link": {"id": "lnk_1", "key": "spring", "tags": ["a", "b"]},
    }

    status, shown = await preview(
        ingest, created["id"], {"format": "template", "template": TEMPLATE, "event": event}
    )

    assert status == 200
    assert shown["body"] == '{"text": "Click on spring", "tags": ["a","b"]}'


async def test_preview_of_a_failing_template_or_a_bad_click_is_a_422(ingest: Client) -> None:
    _, created = await create(ingest)

    status, shown = await preview(
        ingest, created["id"], {"format": "template", "template": HUGE_LOOP}
    )
    assert status == 422
    assert "loop limit" in problems(shown)[0][1]
    status, shown = await preview(ingest, created["id"], {"event": {"type": "link.clicked"}})
    assert status == 422
    assert ("event.account_id", "is required") in problems(shown)


async def test_preview_of_another_accounts_endpoint_is_a_404(ingest: Client) -> None:
    _, created = await create(ingest)

    status, _ = await preview(ingest, created["id"], token=ACCOUNT_B)

    assert status == 404


async def test_openapi_documents_the_template_and_the_preview(ingest: Client) -> None:
    document = await (await ingest.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    create_fields = schemas["EndpointCreate"]["properties"]

    assert "template" in create_fields["format"]["enum"]
    assert create_fields["template"]["anyOf"][0]["maxLength"] == 16 * 1024
    assert "json filter" in create_fields["template"]["anyOf"][0]["description"]
    assert "template" in schemas["Endpoint"]["properties"]
    preview_route = document["paths"]["/v1/endpoints/{endpoint_id}/preview"]["post"]
    assert preview_route["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Preview"
    }


# --- the portal's edit page -----------------------------------------------------------------------


async def edit_page_csrf(ingest: Client, endpoint_id: str) -> tuple[str, str]:
    await open_portal(ingest)
    page = await (await ingest.get(f"/portal/endpoints/{endpoint_id}/edit")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return page, found.group(1)


async def test_the_edit_page_previews_the_typed_template_escaped(ingest: Client) -> None:
    _, created = await create(ingest)
    page, csrf = await edit_page_csrf(ingest, created["id"])
    typed = '{"k": {{ "<b>" | append: link.key | json }}}'

    response = await ingest.post(
        f"/portal/endpoints/{created['id']}/preview",
        data={"csrf": csrf, "format": "template", "template": typed},
    )
    fragment = await response.text()

    assert f'data-preview="/portal/endpoints/{created["id"]}/preview"' in page
    assert '<textarea id="template" name="template"' in page
    assert response.status == 200
    assert "{&#34;k&#34;: &#34;&lt;b&gt;clickhook-test&#34;}" in fragment
    assert "webhook-signature: v1," in fragment


async def test_the_edit_page_preview_names_the_limit_and_needs_the_csrf_token(
    ingest: Client,
) -> None:
    _, created = await create(ingest)
    _, csrf = await edit_page_csrf(ingest, created["id"])
    path = f"/portal/endpoints/{created['id']}/preview"

    failing = await ingest.post(
        path, data={"csrf": csrf, "format": "template", "template": HUGE_LOOP}
    )
    forged = await ingest.post(path, data={"format": "template", "template": TEMPLATE})

    assert "loop limit: more than 10000 loop iterations" in await failing.text()
    assert forged.status == 403


async def test_the_edit_form_saves_the_template(ingest: Client, base: ServiceBase) -> None:
    _, created = await create(ingest)
    _, csrf = await edit_page_csrf(ingest, created["id"])

    response = await ingest.post(
        f"/portal/endpoints/{created['id']}",
        data={
            "csrf": csrf,
            "url": created["url"],
            "format": "template",
            "template": TEMPLATE.replace(", ", ",\r\n"),
        },
        allow_redirects=False,
    )
    stored = base.endpoints.table.get(created["id"])

    assert response.status == 303
    assert stored is not None
    assert stored.template == TEMPLATE.replace(", ", ",\n")
