"""The corpus's module: never run by these tests, it only has to exist."""
