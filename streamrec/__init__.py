"""streamrec: an event-streaming recommender that learns online."""

__version__ = "0.1.0"
