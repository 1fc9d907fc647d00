"""Packages from the requirements files: read, installed once per service into a package dir, listed."""
