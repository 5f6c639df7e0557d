"""Runnable aevos applications; each one is imported and run by a test."""
