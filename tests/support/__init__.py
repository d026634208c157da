"""Helpers shared by the test modules: waiting, running the CLI and workers, seeding app
rows, the Flask app, Drive settings. Fixtures live in tests/conftest.py; test modules
import helpers from here and never from one another."""
