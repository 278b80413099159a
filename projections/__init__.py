"""Read models: folds over the event log, and the projector that keeps them current.

Imports ``orderlog`` (never the HTTP layer). Every fold is ``apply(state, event)``
dispatched by a dict from event type to handler, and passes unknown types through.
The folds take plain events and read nothing else: ``order_status`` makes a new row
per event (and the order's one JSON view); ``metrics`` and ``completions`` update
the state they are handed in place, for speed, so a state given to them belongs to
the fold from then on. Only the order-status model's rows, the projector and the
rebuild script touch the store, through its named methods.
"""
