"""chute: a watch-folder daemon that runs media pipelines."""

__version__ = "0.1.0"
