"""The pure core: values, events, the order life cycle, state, the reducer and the log's
serialization. It imports the standard library, attrs, msgspec and immutables, nothing that
does I/O: no network, no files, no clock, no randomness (tests/system/test_layout.py checks it)."""
