"""Importers beside the HTTP collector: web server access logs and order exports turned into engine events.

The parsing modules are pure (:mod:`ingest.access_log`, :mod:`ingest.orders`, :mod:`ingest.patterns`); reading
files, writing reject files and producing to Kafka live in thin adapters (:mod:`ingest.sink`, :mod:`ingest.tail`)
and in the commands under :mod:`ecrm.commands`.
"""
