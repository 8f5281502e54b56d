"""ticklot feeds: the session layer on picows, venue adapters and their Cython decoders,
the frame recorder, and local venue simulators (``feeds.sim``)."""
