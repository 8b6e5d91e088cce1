"""The HTTP layer, one folder per endpoint family, as vLLM's ``entrypoints/openai``: ``router``
(thin routes: parse, one call, respond), ``serving`` (the handler logic) and ``protocol`` (its
wire models). Wire models several families share sit in ``app.api.protocol``."""
