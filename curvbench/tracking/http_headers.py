"""An MLflow request-header provider (MLflow's plugin group `mlflow.request_header_provider`): against a tracking
server, every request of a curvbench process asks for its own connection (`Connection: close`).

Why: MLflow's client reuses one keep-alive connection, and its uvicorn server answers on it in small segments
that meet the client's delayed ACKs: each request then waits about 40 ms (48 ms per logged epoch measured here,
against 6 ms on a fresh connection; benchmarks/sweep_scaling.py). Only processes that set
CURVBENCH_FRESH_CONNECTIONS (curvbench's Tracker does, for http(s) stores) are affected."""

from __future__ import annotations

import os

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

ENV = "CURVBENCH_FRESH_CONNECTIONS"


class FreshConnections(RequestHeaderProvider):
    def in_context(self) -> bool:
        return os.environ.get(ENV) == "1"

    def request_headers(self) -> dict[str, str]:
        return {"Connection": "close"}
