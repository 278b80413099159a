"""The HTTP layer: the Falcon app factory, its resources, error mapping and waitress wiring.

Thin by design: parse and validate, call one core function, shape the answer.
It may import ``orderlog`` and ``projections``; nothing in the packages imports it.
"""
