"""vlpeft: vision-language parameter-efficient fine-tuning with routing functions."""

__version__ = "0.1.0"
