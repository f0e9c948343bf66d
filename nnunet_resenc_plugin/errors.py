"""Exception types raised by the plugin.

Every error derives from ``ValueError`` so that callers who already catch bad-argument errors keep working,
and every message names the bad value, the allowed values and the fix.
"""


class ResEncPluginError(ValueError):
    """Base class of every error the plugin raises on bad input."""


class NetworkConfigError(ResEncPluginError):
    """Invalid network arguments: list lengths, strides, layer names or input shapes."""


class PlansValidationError(ResEncPluginError):
    """A plans file that the plugin network or trainer cannot use."""


class PlanningError(ResEncPluginError):
    """Invalid planner options such as an unknown preset or a non-positive memory target."""


class DatasetConversionError(ResEncPluginError):
    """Input data that cannot be converted into nnU-Net's raw layout."""


class CheckpointConversionError(ResEncPluginError):
    """A checkpoint whose keys or shapes do not match the target network."""
