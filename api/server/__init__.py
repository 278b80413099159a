"""The HTTP server underneath the app: waitress's channels on an epoll loop, with the
connection limits and framing rules that belong before the app.

It knows nothing of the app's routes: it imports waitress and the problem format of
``api.http`` only.
"""
