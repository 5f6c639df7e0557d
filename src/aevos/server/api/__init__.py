"""HTTP resources, one module each, all thin layers over :class:`aevos.access.Access`."""
