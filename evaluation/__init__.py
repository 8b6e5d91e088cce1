"""Offline evaluation and the critic's training data: ``covrag eval …``, ``covrag selfpractice``.

Tools a checkout runs against a collection, not part of serving: the coverage check of the
conformal threshold (``coverage``, ``cli_coverage``), every answer mode against naive RAG
(``qa``, ``cli_qa``), the labelled self-practice rounds the critic trains on (``selfpractice``),
the answer scoring they share (``scoring``) and where they write without ``--out``
(``outputs``: under the data dir).

Imports flow one way: this package uses ``app``, ``retrieval`` and ``critic``, none of them
imports it. Its commands join the ``covrag`` CLI through ``evaluation.cli.register``, which
``app.cli.commands`` calls only when this package is installed (the API image leaves it out).
"""
