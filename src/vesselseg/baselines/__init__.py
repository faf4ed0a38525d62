"""Classical predictors that give the pipeline real predictions to score before, and beside, the model."""

from vesselseg.baselines.frangi import FrangiConfig, frangi_probability
from vesselseg.baselines.predict import frangi_predictions

__all__ = ["FrangiConfig", "frangi_predictions", "frangi_probability"]
