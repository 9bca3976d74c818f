"""The system utilities every room may use, below all of them: the bad-input error and the
"did you mean" its messages offer (`errors.py`), a full disk and swapping a folder into place
(`disk.py`), signals (`interrupts.py`), file hashes and sizes (`files.py`). They import only
the standard library and each other."""
