"""medequity: measure and mitigate demographic bias in medical image analysis."""

__version__ = "0.1.0"
