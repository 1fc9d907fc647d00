"""A FastAPI app whose only route answers ``POST /v1/sandbox/run`` with one fixed JSON body: the thread ceiling.

The thread executor runs snippets inside the server process, so its throughput is bounded by the HTTP stack
(uvicorn, httptools, uvloop, FastAPI), not by process creation as the fork executor is. This app is that stack
served the way the server serves it (one worker process per core, uvloop, httptools, no access log, no Server
header, the same keep-alive) with no work behind the route: it neither reads nor validates the body and sends the
same envelope P1 expects. P1(thread) divided by its throughput is the share of the stack's headroom the API layer
and the executor leave. Run as ``python -m bench.constant_app`` with ``SANDBOX_PORT`` set (and ``SANDBOX_WORKERS``
to override the worker count), as the server reads them.
"""

from __future__ import annotations

import json
import os

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

from bench.payloads import DIFY_TEMPLATE_STDOUT, RUN_PATH

CONSTANT_BODY = json.dumps(
    {
        "code": 0,
        "message": "success",
        "data": {"stdout": DIFY_TEMPLATE_STDOUT, "stderr": "", "error": "", "exit_code": 0},
    },
    separators=(",", ":"),
).encode()
KEEP_ALIVE_SECONDS = 20  # the server's default keep_alive_seconds

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post(RUN_PATH)
async def run() -> Response:
    return Response(CONSTANT_BODY, media_type="application/json")


def main() -> None:
    uvicorn.run(
        "bench.constant_app:app",
        host="127.0.0.1",
        port=int(os.environ["SANDBOX_PORT"]),
        workers=int(os.environ.get("SANDBOX_WORKERS") or os.cpu_count() or 1),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
