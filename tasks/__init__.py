"""The steps of a curation study: data, mixing, models, training, evaluation, scaling, ranking, tracking."""

__version__ = "0.1.0"
