"""audiomill: turn large audio corpora into training-ready discrete tokens."""

__version__ = "0.1.0"
