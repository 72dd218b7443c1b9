"""A small strategy file's text, read by the controller's schema and by the reference bot's alike."""

STRATEGY = """\
symbols:
  BTCUSDT: {leverage: 5}
  ETHUSDT: {leverage: 4}
  SOLUSDT: {leverage: 3}
buckets:
  majors:
    allocation: 0.6
    symbols: [BTCUSDT, ETHUSDT]
  alts:
    allocation: 0.3
    symbols: [SOLUSDT]
sizing:
  order_fraction: 0.25
"""
