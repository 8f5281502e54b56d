# Venue field parsing shared by the Account's event-shape methods (cold path).
from libc.stdint cimport int64_t
from engine._core.instrument cimport Instrument

cpdef int parse_order_status(object text) except -1
cpdef int parse_order_type(object text) except -1
cpdef int parse_position_status(object text) except -1
cpdef int parse_side(object value) except -1
# Lots / ticks from an int (already in steps) or a decimal string (converted exactly).
cdef int64_t lots_field(Instrument inst, object value, str field) except? -1
cdef int64_t ticks_field(Instrument inst, object value, str field) except? -1
# index[key] or OrderInputError("unknown <what> <key>").
cdef object index_lookup(dict index, object key, str what)
# item[name] or OrderInputError naming the missing field.
cdef object item_field(object item, str name)
# Quote units from an int or a quote-currency decimal string.
cdef object quote_units_any(Instrument inst, object value, str field)
# Exact int at 10**-decimals from a decimal string (or an int already scaled).
cdef object scaled_amount(object value, int decimals, str what)
# entry_price / tick_size * qty_lots as an exact int (DecimalError when not whole).
cdef object entry_notional(Instrument inst, object entry_price, int64_t qty_lots)
