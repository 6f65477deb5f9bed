"""The repository's programs: thin wrappers of the console commands, and the publishing-run driver
(``report.py``). A package so that the tests import them as modules."""
