"""canary-controller: takes a trading-bot release safely into production on Binance USD-M futures."""

__version__ = "0.1.0"
