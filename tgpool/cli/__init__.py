"""The ``tgpool`` command line: ``commands`` (parser, demo, codegen, inspect, list), ``tune`` (tune,
cache), ``bench``, and the demo's models (``demo``, ``resnet_demo``)."""

from .commands import main  # noqa: F401
