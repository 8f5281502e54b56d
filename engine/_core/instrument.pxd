from libc.stdint cimport int32_t, int64_t

cdef class Instrument:
    """A tradable symbol with its exact tick and lot sizes.

    Decoders read the C fields directly and call decimals.dec_to_steps with them:
    price: (price_decimals, tick_units); size: (qty_decimals, lot_units).
    """
    cdef readonly str symbol
    cdef readonly str tick_size
    cdef readonly str lot_size
    cdef readonly int32_t price_decimals
    cdef readonly int64_t tick_units
    cdef readonly int32_t qty_decimals
    cdef readonly int64_t lot_units
    cdef readonly int32_t instrument_id

    cpdef int64_t price_to_ticks(self, object price) except? -1
    cpdef int64_t qty_to_lots(self, object qty) except? -1
    cpdef str ticks_to_price(self, int64_t price_ticks, bint strip_zeros=*)
    cpdef str lots_to_qty(self, int64_t qty_lots, bint strip_zeros=*)
