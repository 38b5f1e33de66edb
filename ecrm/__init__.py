"""The roof: the ``ecrm`` command-line tool, one command per role plus the all-in-one ``ecrm up``."""
