"""The contract every edge shares: the events (`events`), their timestamps, and the raw record.

Nothing here imports the rest of streamrec; everything else may import this.
"""
