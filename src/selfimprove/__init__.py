"""selfimprove: language models that get better at reasoning by practising on checkable problems."""

__version__ = "0.1.0"
