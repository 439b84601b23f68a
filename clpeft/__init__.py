"""clpeft."""
