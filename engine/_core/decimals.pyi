# The decimal helpers are C-level only (cimport engine._core.decimals); nothing is
# exported to Python. Use Instrument.price_to_ticks / qty_to_lots from Python.
