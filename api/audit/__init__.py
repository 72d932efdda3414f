"""Regulator audit: the compliance log (rule A1), exports, chain verification, checkpoints."""
