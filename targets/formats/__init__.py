"""One file per artifact format, each registering a `Format` (see targets/format.py)."""
