"""The benchmark: orderlog measured from outside, as its users run it.

Tooling beside the packages, never installed: ``python -m bench …`` or ``make
bench`` from a checkout. It uses the packages' public API only and writes the
log only through ``orderlog.storage.store``.
"""
