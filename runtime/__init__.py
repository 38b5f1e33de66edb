"""The local runtime: embedded broker and Redis, the processes of ``ecrm up``, and the demo-data simulator."""
