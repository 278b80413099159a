"""Read models: folds over the event log, and the projector that keeps them current.

Imports ``orderlog`` (never the HTTP layer). The folds take plain events and
return states and read nothing else: ``order_view`` builds a new view per event;
``metrics`` updates the state it is handed in place, for speed, so a state given
to it belongs to the fold from then on. Only the projector and the rebuild script
touch the store.
"""
