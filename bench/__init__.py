"""Benchmarks of a checkout: run each from the repository's root as ``python -m bench.<name>``.

They import covrag's installed packages (``app``, ``retrieval``, ``critic``, ``evaluation``)
through their public names, and the test suite's helpers (``tests``) from the checkout.
"""
