"""Cython core: typed-memory state (decimal conversion, instruments, book, kline, orders)."""
