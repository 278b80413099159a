"""The bare endpoint the orderlog server is compared with: ``python -m bench.bare``.

A Falcon app whose POST /orders only parses the JSON body with orjson and answers
201, served by stock waitress (``waitress.create_server``, its own loop) with
orderlog's waitress settings: threads, connection_limit, backlog, poll(). What is
left between the two figures is orderlog's own work, and its own event loop.
"""

from __future__ import annotations

import argparse
import sys

import falcon
import orjson


class BareOrders:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = orjson.loads(req.bounded_stream.read())
        resp.status = falcon.HTTP_201
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps({"order_id": body.get("order_id"), "accepted": True})


class BareHealth:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


def create_bare_app() -> falcon.App:
    app = falcon.App()
    app.add_route("/orders", BareOrders())
    app.add_route("/healthz", BareHealth())
    return app


def main(argv: list[str] | None = None) -> int:
    import waitress

    from api.http_server import waitress_settings
    from api.limits import raise_file_limit
    from orderlog.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="0")
    parser.add_argument("--threads", default=None)
    parser.add_argument("--connection-limit", dest="connection_limit", default=None)
    parser.add_argument("--backlog", default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = load_settings(overrides=overrides)
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    server = waitress.create_server(create_bare_app(), **waitress_settings(settings))
    port = server.effective_port
    sys.stdout.write(f"bare serving on http://{settings.host}:{port}\n")
    sys.stdout.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
