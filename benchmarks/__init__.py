"""Benchmarks: gearshift against C++ gearmand (``make bench`` runs ``benchmarks.run``)."""
