"""Storage: connections, the schema and its migrations, the event store with its group
commit, tokens, the read models' tables, backups and the node's lock on the database.
Every SQL statement is written here.

It imports the domain and peewee; never the service, the worker or anything outside
``orderlog``.
"""
