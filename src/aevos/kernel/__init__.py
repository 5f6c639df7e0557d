"""The durable workflow kernel: workflows, steps, the workflow context, the executor,
workers, leases, retries and run handles.

It knows the storage it records in and the governance services below it (audit, policy,
PII, identity); it never imports the packages above it (people, models, the app object),
which reach it, and which it reaches, only through the interfaces it declares.
"""
