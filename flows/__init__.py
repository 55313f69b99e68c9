"""Prefect flows and tasks only: thin orchestration over the takeover library (see flows/loop.py)."""
