"""``emlens serve``: an OpenAI-compatible server for a (steered) local model."""

from __future__ import annotations

import argparse
import os
from typing import Any

from emlens.cli._checks import count, fail, interventions, port, positive, seconds
from emlens.cli._models import intervention_args, load, model_args


def cmd_serve(a: argparse.Namespace) -> None:
    from emlens.eval.serve.http import ServeLimits, is_loopback
    from emlens.eval.serve.server import make_server

    limits = ServeLimits(a.max_work, a.max_queue, a.max_body, a.request_timeout)
    if not is_loopback(a.host) and not os.environ.get(limits.token_env):
        fail(f"--host {a.host}", f"loopback, or a bearer token in ${limits.token_env}")
    model = load(a)
    name = a.name or a.model
    server = make_server(model, interventions(a, model), a.host, a.port, name, limits)
    print(
        f"serving {a.model} at http://{a.host}:{server.server_port}/v1 (Ctrl-C stops)", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


def add_parsers(sub: Any) -> None:
    """Register ``emlens serve``."""
    s = sub.add_parser("serve", help="OpenAI-compatible server for a (steered) local model")
    model_args(s)
    intervention_args(s)
    s.add_argument("--host", default="127.0.0.1", help="off loopback, $EMLENS_SERVE_TOKEN")
    s.add_argument("--port", type=port, default=8000)
    s.add_argument("--name", help="model name the server reports (default: --model)")
    s.add_argument("--max-work", type=positive, default=8192, help="n x max_tokens per request")
    s.add_argument("--max-queue", type=count, default=8, help="requests waiting (then 503)")
    s.add_argument("--max-body", type=positive, default=1 << 20, help="request bytes (413)")
    s.add_argument("--request-timeout", type=seconds, default=30.0, help="to send a request")
    s.set_defaults(fn=cmd_serve)
