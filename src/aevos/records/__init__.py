"""The records every layer passes around: runs and their steps, run statuses, queue
declarations, human tasks and their forms, approvals.

Plain values with their own validation and nothing else: no I/O, no services. Storage
persists and returns them, the kernel, people and the API build and read them; they sit at
the bottom of the layers (``docs/architecture.md``) so that all of those can import them.
"""
