"""The operator's web page served by the daemon (``web:`` in the config, ``--web``):
``WebState`` records what the daemon emits, ``WebServer`` serves it (aiohttp, own thread)."""
