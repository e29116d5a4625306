"""The past: every closed bar of a range from Binance's public archive and REST (``history``)."""
