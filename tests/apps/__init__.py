"""Applications that tests run in worker subprocesses (``python -m tests.apps.<name>``)."""
