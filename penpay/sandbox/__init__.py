"""Local stand-ins for PenPay's external peers (Deriv, M-Pesa), for tests, demos and benchmarks."""
