"""A tiny OTLP/HTTP collector on 127.0.0.1: keeps the spans POSTed to /v1/traces."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.loopback import LoopbackReceiver


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    service: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # empty for a root span
    attributes: dict[str, str | int | float | bool]


def _value(value: AnyValue) -> str | int | float | bool:
    kind = value.WhichOneof("value")
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    return value.string_value


def decode_spans(body: bytes) -> list[ExportedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[ExportedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        spans.extend(
            ExportedSpan(
                name=span.name,
                service=str(resource.get("service.name", "")),
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes={a.key: _value(a.value) for a in span.attributes},
            )
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
    return spans


@dataclass
class OtlpReceiver(LoopbackReceiver):
    default_path: ClassVar[str] = "/"
    spans: list[ExportedSpan] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path != "/v1/traces":
            return web.Response(status=404)
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.spans.extend(decode_spans(body))
        await self._arrived_one()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    async def wait_for_spans(
        self, trace_id: str, count: int, timeout_s: float
    ) -> list[ExportedSpan]:
        await self._until(lambda: len(self.of_trace(trace_id)) >= count, timeout_s)
        return self.of_trace(trace_id)
