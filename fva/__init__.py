"""fva: face-voice association for the FAME challenge."""

__version__ = "0.1.0"
