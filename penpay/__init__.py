"""PenPay: moves money between Safaricom M-Pesa and Deriv accounts as a Deriv payment agent."""

__version__ = "0.1.0"
