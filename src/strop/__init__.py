"""strop: fine-tune pretrained models on small, task-specific data sets."""

from strop.config import Config, load_config
from strop.errors import StropError
from strop.fit import fit
from strop.predict import Predictor, load

__version__ = "0.1.0"
__all__ = ["Config", "StropError", "Predictor", "fit", "load", "load_config", "__version__"]
