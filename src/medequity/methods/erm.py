"""ERM: empirical risk minimisation, the baseline every method is compared with."""

from medequity.methods.base import Method, register_method


@register_method
class ERM(Method):
    """Plain mean binary cross-entropy over the training set."""

    name = "erm"
    tasks = ("classification", "segmentation")
    defaults = {}
