"""Replay: recorded bars published again, through the same bus, to the same components.

``sources`` reads the stores (one small class per kind), ``feed`` merges their streams
into one deterministic sequence and publishes it, ``command`` is ``quantcore replay``,
``warm`` gives ``run`` the past bars its components ask for.
"""
