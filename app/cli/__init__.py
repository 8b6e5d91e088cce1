"""The ``covrag`` command line: serve, ask, ingest, calibrate, workers, critic training."""
