"""The domain: event types, the order's rules, the processing policy and the core's errors.

Pure: the standard library and orjson only, never the storage or anything outside
``orderlog``.
"""
