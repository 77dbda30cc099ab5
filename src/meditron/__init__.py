"""meditron: build, train, evaluate and serve medical LLMs the way EPFL's MEDITRON did."""

__version__ = "0.1.0"
