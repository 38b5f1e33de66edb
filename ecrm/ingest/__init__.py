"""Importers that turn outside records (web server access logs, order exports) into engine events.

The modules here are pure: they parse, classify and map records to event dictionaries and count what they did.
Reading files, writing reject files and producing to Kafka live in thin adapters (:mod:`ecrm.ingest.sink`,
:mod:`ecrm.ingest.tail`) and in the commands under :mod:`ecrm.commands`.
"""
