"""Read models: pure folds over the event log, and the projector that keeps them current.

Imports ``orderlog`` (never the HTTP layer). The folds take plain events and
return states; only the projector and the rebuild script touch the store.
"""
