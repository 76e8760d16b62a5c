"""The autotuner: ``tuner`` measures and picks launch configs, ``cache`` keeps them (JSON files,
lookup order), ``distributed`` shares the work across ranks, ``workload`` records what a shapes
file or a model launches. Importing this package registers the tuner as launch.py's provider."""

from .. import launch
from . import tuner

launch.set_provider(tuner.cached_config)
