"""Storage: connections, the schema and its migrations, the event store with its group
commit, tokens, backups and the node's lock on the database.

It imports the domain and peewee; never the service, the worker or anything outside
``orderlog``.
"""
