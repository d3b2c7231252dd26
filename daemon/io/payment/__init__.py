"""The payment port (`port.py`) and its simulated terminal (`simulator.py`), apart."""
