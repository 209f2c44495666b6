"""One batch of records in, recommendations out: preprocess → learn → recommend.

preprocess.py  bytes → a valid event, a duplicate dropped, or a dead letter
pipeline.py    one batch end to end, and the state a checkpoint keeps
model.py       the rating/ranking learners plus histories, popularity, seen sets
recommend.py   top-K lists with their reasons and the bandit's slots
quality.py     test-then-learn scores (replay) and their sampled live version (metrics)
observer.py    what each batch reports (`BatchReport`) and the interface it goes through

Core never imports Kafka, files or Prometheus: edges plug in from `streamrec.io`, metrics through
the small `BatchObserver` interface.
"""
