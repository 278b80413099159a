"""The Falcon app: routes, inputs, problems, auth, OpenAPI, metrics and the dashboard.

It runs under any WSGI server: it never imports waitress or ``api.server``.
"""
